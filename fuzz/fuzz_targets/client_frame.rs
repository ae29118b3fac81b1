//! `apex_backend::protocol::parse_client_frame` on arbitrary text.
//!
//! Properties: it never panics; an accepted frame is within the documented limits; a refused
//! one has an error code, and the `error` frame the server would send for it is valid JSON
//! that carries that code and message.

#![no_main]

use apex_backend::protocol::{ClientFrame, MAX_CONTENT_BYTES, error_frame, parse_client_frame};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8; invalid bytes become U+FFFD (still exercises the parser
    // instead of throwing the input away).
    let text = String::from_utf8_lossy(data);
    match parse_client_frame(&text) {
        Ok(ClientFrame::UserMessage { content, .. }) => {
            assert!(!content.trim().is_empty(), "accepted an empty message");
            assert!(
                content.len() <= MAX_CONTENT_BYTES,
                "accepted {} bytes of content",
                content.len()
            );
        }
        Ok(ClientFrame::Ping { payload }) => {
            // What the server answers with (ws/connection.rs): must serialize and parse back.
            let pong = json!({ "type": "pong", "payload": payload }).to_string();
            serde_json::from_str::<Value>(&pong).expect("pong is valid JSON");
        }
        Ok(ClientFrame::Ack { .. } | ClientFrame::Resume { .. }) => {}
        Err(err) => {
            let code = err.code();
            let message = err.to_string();
            let frame = error_frame(code, message.as_str(), None);
            let value: Value = serde_json::from_str(&frame)
                .unwrap_or_else(|e| panic!("error frame is not JSON ({e}): {frame}"));
            assert_eq!(value["type"], "error", "{frame}");
            assert_eq!(value["payload"]["code"], json!(code), "{frame}");
            assert!(value["payload"]["code"].is_string(), "{frame}");
            assert_eq!(value["payload"]["message"], message.as_str(), "{frame}");
            assert!(value["timestamp"].is_string(), "{frame}");
            // With details, as the rate limiter sends it.
            let frame = error_frame(code, message, Some(json!({ "limit_per_sec": 20 })));
            serde_json::from_str::<Value>(&frame).expect("error frame with details is JSON");
        }
    }
});

//! Who is connecting: a ticket, a bearer header (original or load-balancer preserved), or a
//! `jwt.<token>` subprotocol, whichever is present first in that order.

use std::time::Duration;

use axum::http::HeaderMap;
use uuid::Uuid;

use crate::auth::TokenType;
use crate::error::ApiError;
use crate::http::request_bearer;
use crate::state::AppState;
use crate::store::UserRecord;

/// How far back `connection_established.interrupted_runs` looks.
const INTERRUPTED_NOTICE_WINDOW: Duration = Duration::from_secs(3600);

/// Who connects, and their runs that an instance failure cut short (the user is told on
/// (re)connect), read together.
pub struct Connecting {
    pub user: UserRecord,
    pub interrupted_runs: Vec<Uuid>,
}

/// Subprotocols the server speaks besides `jwt.<token>`.
const PROTOCOLS: &[&str] = &["jwt-auth", "apex.v1"];

/// The subprotocol to echo: the first offered one the server speaks, preferring a named
/// protocol over `jwt.<token>` so the token is not echoed into response headers (and logs)
/// when the client offers both.
pub fn select_protocol(offered: &[String]) -> Option<&str> {
    let offered = || offered.iter().map(String::as_str);
    offered()
        .find(|p| PROTOCOLS.contains(p))
        .or_else(|| offered().find(|p| p.starts_with("jwt.")))
}

/// The JWT inside a `jwt.<token>` subprotocol. Clients send the compact JWT as is, or
/// base64url-encoded as a whole.
fn subprotocol_token(offered: &[String]) -> Option<String> {
    let raw = offered.iter().find_map(|p| p.strip_prefix("jwt."))?;
    if raw.matches('.').count() == 2 {
        return Some(raw.to_owned());
    }
    decode_base64url(raw).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// base64url or standard base64, padded or not.
fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    URL_SAFE
        .decode(text)
        .or_else(|_| STANDARD.decode(text))
        .ok()
}

pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
    offered: &[String],
) -> Result<Connecting, ApiError> {
    let user_id = credentials(state, headers, ticket, offered).await?;
    if state.sabotage == Some(crate::sabotage::Sabotage::DemoIdentity) {
        // Test only: every connection becomes the same user, as in the demo-identity outage.
        if let Some(demo) = state.sabotage_state.demo_identity
            && let Ok(connecting) = connecting(state, demo).await
        {
            return Ok(connecting);
        }
    }
    connecting(state, user_id).await
}

/// The user and their interrupted runs: one store round trip.
async fn connecting(state: &AppState, user_id: Uuid) -> Result<Connecting, ApiError> {
    let (user, interrupted_runs) = state
        .store
        .user_for_connection(user_id, INTERRUPTED_NOTICE_WINDOW)
        .await?
        .ok_or(ApiError::UnknownUser)?;
    Ok(Connecting {
        user,
        interrupted_runs,
    })
}

/// The user the credentials name (not yet looked up).
async fn credentials(
    state: &AppState,
    headers: &HeaderMap,
    ticket: Option<&str>,
    offered: &[String],
) -> Result<Uuid, ApiError> {
    if let Some(ticket) = ticket {
        return state
            .bus
            .redeem_ticket(ticket)
            .await?
            .ok_or(ApiError::InvalidTicket);
    }
    let verify = |token: &str| Ok(state.tokens.verify(token, TokenType::Access)?.sub);
    if let Some(token) = request_bearer(headers) {
        return verify(token?);
    }
    match subprotocol_token(offered) {
        Some(token) => verify(&token),
        None => Err(ApiError::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_first_protocol_the_server_speaks() {
        let offered = vec![
            "chat.v9".to_owned(),
            "jwt.a.b.c".to_owned(),
            "jwt-auth".to_owned(),
        ];
        assert_eq!(select_protocol(&offered), Some("jwt-auth"));
        assert_eq!(
            select_protocol(&["jwt.a.b.c".to_owned()]),
            Some("jwt.a.b.c")
        );
        assert_eq!(select_protocol(&["x".to_owned()]), None);
    }

    #[test]
    fn reads_raw_and_base64url_tokens_from_the_subprotocol() {
        assert_eq!(
            subprotocol_token(&["jwt.a.b.c".into()]).as_deref(),
            Some("a.b.c")
        );
        // "a.b.c" base64url-encoded, unpadded and padded.
        for offered in ["jwt.YS5iLmM", "jwt.YS5iLmM="] {
            assert_eq!(
                subprotocol_token(&[offered.into()]).as_deref(),
                Some("a.b.c")
            );
        }
        // "??>" in either alphabet.
        for offered in ["jwt.Pz8-", "jwt.Pz8+"] {
            assert_eq!(subprotocol_token(&[offered.into()]).as_deref(), Some("??>"));
        }
    }
}

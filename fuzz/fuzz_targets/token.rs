//! `apex_backend::auth::TokenKeys::verify` on arbitrary and on tampered tokens.
//!
//! The first byte of the input picks the mode:
//! - even (e.g. `0`): the rest, as text, is verified as an access and as a refresh token. It
//!   must never panic, and it may only be accepted when it is exactly one of the two tokens
//!   this target signed (the seed corpus holds them).
//! - odd (e.g. `1`): the rest is a list of 4-byte edits `[op, pos_hi, pos_lo, value]` applied
//!   to one of those tokens (op bit 2 picks which): op % 4 = 0 replaces the byte at `pos`,
//!   1 XORs it with `value`, 2 inserts `value` before `pos`, 3 deletes it. The edited token
//!   must be refused unless it is byte-for-byte the original.
//!
//! The signed tokens are built deterministically (fixed claims, expiry in 2096) so that a
//! crash input replays the same way on every run; `TokenKeys::issue` (random `jti`, current
//! time) is checked once at start-up to verify with the same keys.

#![no_main]

use std::sync::LazyLock;

use apex_backend::auth::{Claims, TokenKeys, TokenType};
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef";
const ISSUER: &str = "netra-apex";
const AUDIENCE: &str = "netra-apex-chat";

struct Fixture {
    keys: TokenKeys,
    access: String,
    refresh: String,
}

fn signed(token_type: &str) -> String {
    let claims: Claims = serde_json::from_value(serde_json::json!({
        "sub": "7b0e3c1a-2f4d-4e5b-9a6c-8d7e6f5a4b3c",
        "email": "vu01@apex.test",
        "iat": 1_700_000_000u64,
        "exp": 4_000_000_000u64,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": "00000000-0000-4000-8000-000000000001",
        "token_type": token_type,
    }))
    .expect("fixture claims");
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("HS256 signing")
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let keys = TokenKeys::new(SECRET, ISSUER, AUDIENCE);
    let access = signed("access");
    let refresh = signed("refresh");
    assert!(keys.verify(&access, TokenType::Access).is_ok());
    assert!(keys.verify(&refresh, TokenType::Refresh).is_ok());
    assert!(keys.verify(&access, TokenType::Refresh).is_err());
    let sub = serde_json::from_value(serde_json::json!("7b0e3c1a-2f4d-4e5b-9a6c-8d7e6f5a4b3c"))
        .expect("uuid");
    let issued = keys.issue(sub, "vu01@apex.test", TokenType::Access, 3600);
    assert!(
        keys.verify(&issued, TokenType::Access).is_ok(),
        "issue() does not verify"
    );
    if std::env::var_os("APEX_FUZZ_PRINT_TOKENS").is_some() {
        eprintln!("access: {access}\nrefresh: {refresh}");
    }
    Fixture {
        keys,
        access,
        refresh,
    }
});

fn verify_arbitrary(f: &Fixture, text: &str) {
    for (expected, own) in [
        (TokenType::Access, &f.access),
        (TokenType::Refresh, &f.refresh),
    ] {
        if let Ok(claims) = f.keys.verify(text, expected) {
            assert!(
                text == own.as_str(),
                "accepted a token this target never signed, as {expected:?}: {text:?} → {claims:?}"
            );
            assert_eq!(claims.token_type, expected);
        }
    }
}

fn tamper(f: &Fixture, edits: &[u8]) {
    let mut which_refresh = false;
    let mut bytes: Option<Vec<u8>> = None;
    for edit in edits.chunks_exact(4) {
        let [op, hi, lo, value] = [edit[0], edit[1], edit[2], edit[3]];
        let token = bytes.get_or_insert_with(|| {
            which_refresh = op & 4 != 0;
            let original = if which_refresh { &f.refresh } else { &f.access };
            original.as_bytes().to_vec()
        });
        let pos = usize::from(u16::from_be_bytes([hi, lo]));
        match op % 4 {
            0 if !token.is_empty() => {
                let i = pos % token.len();
                token[i] = value;
            }
            1 if !token.is_empty() => {
                let i = pos % token.len();
                token[i] ^= value;
            }
            2 => {
                let i = pos % (token.len() + 1);
                token.insert(i, value);
            }
            3 if !token.is_empty() => {
                let i = pos % token.len();
                token.remove(i);
            }
            _ => {}
        }
    }
    let Some(bytes) = bytes else { return };
    let (original, expected) = if which_refresh {
        (&f.refresh, TokenType::Refresh)
    } else {
        (&f.access, TokenType::Access)
    };
    let text = String::from_utf8_lossy(&bytes);
    let verdict = f.keys.verify(&text, expected);
    if text == original.as_str() {
        assert!(
            verdict.is_ok(),
            "the untouched token was refused: {verdict:?}"
        );
    } else {
        assert!(
            verdict.is_err(),
            "a tampered token was accepted:\n  original {original}\n  tampered {text}\n  claims {verdict:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        verify_arbitrary(f, &String::from_utf8_lossy(rest));
    } else {
        tamper(f, rest);
    }
});

//! Tokens and passwords: HS256 JWTs (RFC 7519, compact JWS of RFC 7515) with strict
//! verification, argon2id hashing off the async threads.
//!
//! The JWTs are signed and verified here on the `hmac` and `sha2` crates the Postgres driver
//! already builds, instead of through a JWT library: the only one with a pure-Rust backend
//! brings a second generation of the RustCrypto crates and RSA and elliptic curves this
//! backend never uses (about 35 crates). Interoperability is pinned by tokens made elsewhere
//! (see the tests), and the fuzz target `token` checks tampering against `jsonwebtoken`.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::limits::{Busy, HashGate};

/// Which kind of token a JWT is; an access token is never accepted as a refresh token and the
/// other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    Access,
    Refresh,
}

/// The claims of every token the backend issues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
    pub jti: Uuid,
    pub token_type: TokenType,
}

/// Why a token was refused. The message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not allowed (only HS256)")]
    BadAlgorithm,
    #[error("token issuer or audience is wrong")]
    WrongIssuerOrAudience,
    #[error("wrong token type: expected {0}")]
    WrongType(&'static str),
    #[error("token is malformed")]
    Malformed,
    #[error("refresh token is unknown, already used or revoked")]
    Revoked,
}

/// Signs and verifies tokens with one HS256 secret.
pub struct TokenKeys {
    mac: Hmac<Sha256>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// The JOSE header of every token issued (docs/protocol.md §2.9).
const HEADER: &[u8] = br#"{"typ":"JWT","alg":"HS256"}"#;

/// The JWS algorithms of RFC 7518 other than HS256: named, but not allowed here
/// (`BadAlgorithm`). `none` and names outside the registry make a token malformed.
const OTHER_ALGORITHMS: [&str; 12] = [
    "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384",
    "PS512", "EdDSA",
];

/// The JOSE header fields verification looks at; others are ignored.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    typ: Option<String>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11): none are, so any is refused.
    crit: Option<serde::de::IgnoredAny>,
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Issues a token of `token_type` for the user, valid for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: Uuid,
        email: &str,
        token_type: TokenType,
        ttl_secs: u64,
    ) -> String {
        self.issue_with_jti(user_id, email, token_type, ttl_secs, Uuid::new_v4())
    }

    /// [`Self::issue`] with a given `jti` (refresh tokens, whose `jti` the store keeps).
    pub fn issue_with_jti(
        &self,
        user_id: Uuid,
        email: &str,
        token_type: TokenType,
        ttl_secs: u64,
        jti: Uuid,
    ) -> String {
        let iat = unix_now();
        self.sign(&Claims {
            sub: user_id,
            email: email.to_owned(),
            iat,
            exp: iat + ttl_secs,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti,
            token_type,
        })
    }

    /// Signs `claims` as they are (tests use it to make expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac.clone();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Verifies the form, the algorithm (HS256 only), the signature (in constant time), `exp`
    /// and `nbf` (5 s leeway), `iss`, `aud` and `token_type`. Every claim of [`Claims`] is
    /// required.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        let Some((signed, signature)) = token.rsplit_once('.') else {
            return Err(TokenError::Malformed);
        };
        let Some((header, payload)) = signed.split_once('.') else {
            return Err(TokenError::Malformed);
        };
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        let header: JoseHeader = b64_json(header)?;
        if OTHER_ALGORITHMS.contains(&header.alg.as_str()) {
            return Err(TokenError::BadAlgorithm);
        }
        if header.alg != "HS256" || signature.is_empty() {
            // `alg: none`, an unknown name, or an unsigned token.
            return Err(TokenError::Malformed);
        }
        if header.crit.is_some()
            || header
                .typ
                .is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT"))
        {
            return Err(TokenError::Malformed);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;

        let claims: serde_json::Value = b64_json(payload)?;
        let nbf = match claims.get("nbf") {
            None => None,
            Some(nbf) => Some(nbf.as_u64().ok_or(TokenError::Malformed)?),
        };
        let claims = Claims::deserialize(claims).map_err(|_| TokenError::Malformed)?;
        let now = unix_now();
        if claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
            return Err(TokenError::Malformed);
        }
        if claims.iss != self.issuer || claims.aud != self.audience {
            return Err(TokenError::WrongIssuerOrAudience);
        }
        if claims.token_type != expected {
            return Err(TokenError::WrongType(match expected {
                TokenType::Access => "an access token",
                TokenType::Refresh => "a refresh token",
            }));
        }
        Ok(claims)
    }
}

/// Argon2id with configurable cost. Hashing and verifying run on the blocking pool, at most
/// as many at once as the [`HashGate`] has slots.
///
/// Each hash needs its memory cost in working memory (19 MiB by default). Allocated per hash,
/// freed blocks that size stay in the allocator's per-thread arenas and the process keeps
/// hundreds of MiB after a burst of logins; so the working memory is kept and reused, one
/// buffer per slot in use.
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    params: Params,
    gate: Arc<HashGate>,
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// The parts of an argon2 PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
struct Phc {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl Phc {
    fn parse(phc: &str) -> Option<Self> {
        let mut parts = phc.split('$');
        if !parts.next()?.is_empty() {
            return None;
        }
        let algorithm = match parts.next()? {
            "argon2id" => Algorithm::Argon2id,
            "argon2i" => Algorithm::Argon2i,
            "argon2d" => Algorithm::Argon2d,
            _ => return None,
        };
        let version = match parts.next()? {
            "v=19" => Version::V0x13,
            "v=16" => Version::V0x10,
            _ => return None,
        };
        let (mut m, mut t, mut p) = (None, None, None);
        for pair in parts.next()?.split(',') {
            let (key, value) = pair.split_once('=')?;
            let value: u32 = value.parse().ok()?;
            match key {
                "m" => m = Some(value),
                "t" => t = Some(value),
                "p" => p = Some(value),
                _ => return None,
            }
        }
        let salt = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
        let hash = STANDARD_NO_PAD.decode(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        let params = Params::new(m?, t?, p?, Some(hash.len())).ok()?;
        Some(Self {
            algorithm,
            version,
            params,
            salt,
            hash,
        })
    }
}

impl PasswordHashing {
    pub fn new(
        m_cost: u32,
        t_cost: u32,
        p_cost: u32,
        gate: HashGate,
    ) -> Result<Self, argon2::Error> {
        Ok(Self {
            params: Params::new(m_cost, t_cost, p_cost, None)?,
            gate: Arc::new(gate),
            memory: Arc::default(),
        })
    }

    /// Runs argon2 into `out` with a reused working memory buffer.
    fn compute(
        memory: &Mutex<Vec<Vec<Block>>>,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let blocks = params.block_count();
        let mut buffer = memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        if buffer.len() < blocks {
            buffer.resize(blocks, Block::default());
        }
        let result = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
            password,
            salt,
            out,
            &mut buffer[..blocks],
        );
        memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buffer);
        result
    }

    /// A PHC string for `password` with a fresh random salt. Waits for a slot however long it
    /// takes: only the backend itself hashes (seeding).
    pub async fn hash(&self, password: String) -> String {
        let (params, memory) = (self.params.clone(), self.memory.clone());
        let _slot = self.gate.enter_unbounded().await;
        tokio::task::spawn_blocking(move || {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).expect("the OS provides randomness");
            let mut out = [0u8; 32];
            Self::compute(
                &memory,
                Algorithm::Argon2id,
                Version::V0x13,
                params.clone(),
                password.as_bytes(),
                &salt,
                &mut out,
            )
            .expect("argon2 hashing with valid params");
            format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                STANDARD_NO_PAD.encode(salt),
                STANDARD_NO_PAD.encode(out)
            )
        })
        .await
        .expect("hashing task does not panic")
    }

    /// True when `password` matches the PHC string; its own parameters are used. [`Busy`]
    /// when every slot is taken and the queue is full: nothing was hashed.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, Busy> {
        let Some(phc) = Phc::parse(&phc) else {
            return Ok(false);
        };
        let _slot = self.gate.enter().await?;
        let memory = self.memory.clone();
        // The slot is held until the hash finishes, even if the request is abandoned: the
        // blocking task runs to the end either way.
        Ok(tokio::task::spawn_blocking(move || {
            let mut out = vec![0u8; phc.hash.len()];
            Self::compute(
                &memory,
                phc.algorithm,
                phc.version,
                phc.params,
                password.as_bytes(),
                &phc.salt,
                &mut out,
            )
            .is_ok()
                && constant_time_eq(&out, &phc.hash)
        })
        .await
        .unwrap_or(false))
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpadded base64url, to forge tokens.
    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(b"secret", "netra-apex", "netra-apex-chat")
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let id = Uuid::new_v4();
        let token = keys().issue(id, "a@apex.test", TokenType::Access, 60);
        let claims = keys().verify(&token, TokenType::Access).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.email, "a@apex.test");
        assert_eq!(claims.iss, "netra-apex");
    }

    #[test]
    fn refresh_tokens_are_not_access_tokens() {
        let token = keys().issue(Uuid::new_v4(), "a@apex.test", TokenType::Refresh, 60);
        assert_eq!(
            keys().verify(&token, TokenType::Access),
            Err(TokenError::WrongType("an access token"))
        );
    }

    #[test]
    fn other_secret_issuer_or_audience_is_refused() {
        let token = keys().issue(Uuid::new_v4(), "a@apex.test", TokenType::Access, 60);
        let other = TokenKeys::new(b"other", "netra-apex", "netra-apex-chat");
        assert_eq!(
            other.verify(&token, TokenType::Access),
            Err(TokenError::BadSignature)
        );
        let other = TokenKeys::new(b"secret", "evil", "netra-apex-chat");
        assert_eq!(
            other.verify(&token, TokenType::Access),
            Err(TokenError::WrongIssuerOrAudience)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let claims = format!(
            r#"{{"sub":"{}","email":"a@apex.test","iat":{},"exp":{},"iss":"netra-apex","aud":"netra-apex-chat","jti":"{}","token_type":"access"}}"#,
            Uuid::new_v4(),
            unix_now(),
            unix_now() + 60,
            Uuid::new_v4()
        );
        // As docs/protocol.md §2.9 says: a named other algorithm is not allowed, `none` or
        // an unsigned token is malformed.
        for (header, signature, expected) in [
            (r#"{"alg":"none","typ":"JWT"}"#, "", TokenError::Malformed),
            (
                r#"{"alg":"HS512","typ":"JWT"}"#,
                "c2ln",
                TokenError::BadAlgorithm,
            ),
            (
                r#"{"alg":"RS256","typ":"JWT"}"#,
                "c2ln",
                TokenError::BadAlgorithm,
            ),
            (r#"{"alg":"HS256","typ":"JWT"}"#, "", TokenError::Malformed),
            (
                r#"{"alg":"hs256","typ":"JWT"}"#,
                "c2ln",
                TokenError::Malformed,
            ),
        ] {
            let token = format!(
                "{}.{}.{signature}",
                b64(header.as_bytes()),
                b64(claims.as_bytes())
            );
            assert_eq!(
                keys().verify(&token, TokenType::Access),
                Err(expected),
                "{header}"
            );
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = keys();
        let mut claims = keys
            .verify(
                &keys.issue(Uuid::new_v4(), "a@apex.test", TokenType::Access, 60),
                TokenType::Access,
            )
            .unwrap();
        claims.exp = unix_now() - 120;
        let token = keys.sign(&claims);
        assert_eq!(
            keys.verify(&token, TokenType::Access),
            Err(TokenError::Expired)
        );
    }

    /// Made with Python's `hmac`, `hashlib` and `base64`, independently of this module: with
    /// `alg` first, and with `typ` first as this module and `jsonwebtoken` write it.
    const INTEROP: [&str; 2] = [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI3YjBlM2MxYS0yZjRkLTRlNWItOWE2Yy04ZDdlNmY1YTRiM2MiLCJlbWFpbCI6InZ1MDFAYXBleC50ZXN0IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsImlzcyI6Im5ldHJhLWFwZXgiLCJhdWQiOiJuZXRyYS1hcGV4LWNoYXQiLCJqdGkiOiIwMDAwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.M0nKgZ1UXkvR3c-vcEgYawv0OJkQyNfEO4DDGnO50w8",
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3YjBlM2MxYS0yZjRkLTRlNWItOWE2Yy04ZDdlNmY1YTRiM2MiLCJlbWFpbCI6InZ1MDFAYXBleC50ZXN0IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQwMDAwMDAwMDAsImlzcyI6Im5ldHJhLWFwZXgiLCJhdWQiOiJuZXRyYS1hcGV4LWNoYXQiLCJqdGkiOiIwMDAwMDAwMC0wMDAwLTQwMDAtODAwMC0wMDAwMDAwMDAwMDEiLCJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.GeQbq9hNWBbrhFfAkMRun7ic5boBxQ-aiMLUPEv1oP0",
    ];

    fn interop_keys() -> TokenKeys {
        TokenKeys::new(b"interop-secret", "netra-apex", "netra-apex-chat")
    }

    #[test]
    fn tokens_made_elsewhere_verify_and_signing_matches_them() {
        let keys = interop_keys();
        for token in INTEROP {
            let claims = keys.verify(token, TokenType::Access).unwrap();
            assert_eq!(claims.email, "vu01@apex.test");
            assert_eq!(claims.exp, 4_000_000_000);
        }
        let claims = keys.verify(INTEROP[1], TokenType::Access).unwrap();
        assert_eq!(keys.sign(&claims), INTEROP[1]);
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let keys = interop_keys();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        for (i, c) in INTEROP[0].char_indices() {
            for replacement in alphabet.chars().filter(|r| *r != c).step_by(7) {
                let mut token = INTEROP[0].to_owned();
                token.replace_range(i..=i, &replacement.to_string());
                assert!(
                    keys.verify(&token, TokenType::Access).is_err(),
                    "{token} verified"
                );
            }
        }
        for token in [
            format!("{}=", INTEROP[0]),
            format!("{}.", INTEROP[0]),
            format!("{}.x", INTEROP[0]),
            INTEROP[0].replacen('.', "..", 1),
            String::new(),
            "..".into(),
        ] {
            assert_eq!(
                keys.verify(&token, TokenType::Access),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn unknown_critical_headers_other_types_and_future_nbf_are_refused() {
        let keys = keys();
        let mut claims = serde_json::to_value(
            keys.verify(
                &keys.issue(Uuid::new_v4(), "a@apex.test", TokenType::Access, 60),
                TokenType::Access,
            )
            .unwrap(),
        )
        .unwrap();
        let forge = |header: &str, claims: &serde_json::Value| {
            let signed = format!(
                "{}.{}",
                b64(header.as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
            mac.update(signed.as_bytes());
            format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
        };
        assert!(
            keys.verify(&forge(r#"{"alg":"HS256"}"#, &claims), TokenType::Access)
                .is_ok(),
            "typ is optional"
        );
        for header in [
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":"HS256","typ":"at+jwt"}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            assert_eq!(
                keys.verify(&forge(header, &claims), TokenType::Access),
                Err(TokenError::Malformed),
                "{header}"
            );
        }
        claims["nbf"] = serde_json::json!(unix_now() + 3600);
        assert_eq!(
            keys.verify(
                &forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims),
                TokenType::Access
            ),
            Err(TokenError::Malformed)
        );
        claims["nbf"] = serde_json::json!(unix_now() - 1);
        assert!(
            keys.verify(
                &forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims),
                TokenType::Access
            )
            .is_ok()
        );
        claims.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            keys.verify(
                &forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims),
                TokenType::Access
            ),
            Err(TokenError::Malformed),
            "exp is required"
        );
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hashing = PasswordHashing::new(Params::MIN_M_COST, 1, 1, HashGate::new(1, 0)).unwrap();
        let phc = hashing.hash("correct-horse".into()).await;
        assert!(phc.starts_with("$argon2id$"));
        assert_eq!(
            hashing.verify("correct-horse".into(), phc.clone()).await,
            Ok(true)
        );
        assert_eq!(hashing.verify("wrong".into(), phc).await, Ok(false));
    }

    #[tokio::test]
    async fn hashes_interoperate_with_the_argon2_crates_own_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let hashing = PasswordHashing::new(Params::MIN_M_COST, 1, 1, HashGate::new(1, 0)).unwrap();
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 2, 1, None).unwrap(),
        )
        .hash_password(b"correct-horse")
        .unwrap()
        .to_string();
        assert_eq!(
            hashing.verify("correct-horse".into(), theirs.clone()).await,
            Ok(true)
        );
        assert_eq!(
            hashing.verify("correct-hors".into(), theirs).await,
            Ok(false)
        );
        let ours = hashing.hash("correct-horse".into()).await;
        assert!(
            Argon2::default()
                .verify_password(b"correct-horse", ours.as_str())
                .is_ok(),
            "{ours}"
        );
        for broken in [
            "",
            "!demo",
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
            "$argon2id$v=19$x=1$a$b",
        ] {
            assert_eq!(hashing.verify("x".into(), broken.into()).await, Ok(false));
        }
    }
}

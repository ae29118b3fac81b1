//! Tokens and passwords: HS256 JWTs with strict verification, argon2id hashing off the async
//! threads.

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}

/// Signs and verifies tokens with one HS256 secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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

impl TokenKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.algorithms = vec![jsonwebtoken::Algorithm::HS256];
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
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
        let iat = unix_now();
        let claims = Claims {
            sub: user_id,
            email: email.to_owned(),
            iat,
            exp: iat + ttl_secs,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: Uuid::new_v4(),
            token_type,
        };
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .expect("HS256 signing cannot fail")
    }

    /// Verifies signature, algorithm, `exp`, `iss`, `aud` and `token_type`.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::BadAlgorithm
                }
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                    TokenError::WrongIssuerOrAudience
                }
                _ => TokenError::Malformed,
            })?;
        if data.claims.token_type != expected {
            return Err(TokenError::WrongType(match expected {
                TokenType::Access => "an access token",
                TokenType::Refresh => "a refresh token",
            }));
        }
        Ok(data.claims)
    }
}

/// Argon2id with configurable cost. Hashing and verifying run on the blocking pool.
#[derive(Debug, Clone)]
pub struct PasswordHashing {
    params: Params,
}

impl PasswordHashing {
    pub fn new(m_cost: u32, t_cost: u32, p_cost: u32) -> Result<Self, argon2::Error> {
        Ok(Self {
            params: Params::new(m_cost, t_cost, p_cost, None)?,
        })
    }

    /// A PHC string for `password` with a fresh random salt.
    pub async fn hash(&self, password: String) -> String {
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes())
                .expect("argon2 hashing with valid params")
                .to_string()
        })
        .await
        .expect("hashing task does not panic")
    }

    /// True when `password` matches the PHC string; its own parameters are used.
    pub async fn verify(&self, password: String, phc: String) -> bool {
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64_helpers::b64;

    mod base64_helpers {
        /// Unpadded base64url, enough to forge tokens in tests.
        pub fn b64(bytes: &[u8]) -> String {
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
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
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{}.", b64(header.as_bytes()), b64(claims.as_bytes()));
            assert!(
                keys().verify(&token, TokenType::Access).is_err(),
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
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(
            keys.verify(&token, TokenType::Access),
            Err(TokenError::Expired)
        );
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hashing = PasswordHashing::new(Params::MIN_M_COST, 1, 1).unwrap();
        let phc = hashing.hash("correct-horse".into()).await;
        assert!(phc.starts_with("$argon2id$"));
        assert!(hashing.verify("correct-horse".into(), phc.clone()).await);
        assert!(!hashing.verify("wrong".into(), phc).await);
    }
}

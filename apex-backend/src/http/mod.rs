//! The HTTP API: auth, tickets, health, readiness and metrics.

pub mod auth;
pub mod health;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The bearer token of a request: `Authorization`, else `X-Original-Authorization` (the copy
/// a load balancer can be told to preserve when it strips the original).
pub fn request_bearer(headers: &HeaderMap) -> Option<&str> {
    [AUTHORIZATION.as_str(), "x-original-authorization"]
        .iter()
        .filter_map(|name| headers.get(*name)?.to_str().ok())
        .find_map(bearer_token)
}

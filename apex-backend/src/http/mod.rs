//! The HTTP API: auth, tickets, health, readiness and metrics.

pub mod auth;
pub mod health;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::error::ApiError;

/// The token of an `Authorization: Bearer <token>` header value, if it is one.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The bearer token of a request, from the first of `Authorization` and
/// `X-Original-Authorization` (the copy a load balancer can be told to preserve when it strips
/// the original) that is present. `None` when neither is present; a present header that is not
/// a bearer token is an error, never skipped for the other.
pub fn request_bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    [AUTHORIZATION.as_str(), "x-original-authorization"]
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(ApiError::MissingToken)
        })
}

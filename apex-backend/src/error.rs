//! The HTTP error type: one variant per status, a JSON body for every client error, internal
//! causes logged and never shown.

use axum::Json;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::TokenError;
use crate::bus::BusError;
use crate::store::StoreError;

/// An error answer of the HTTP API: `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidBody(String),
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("missing bearer token")]
    MissingToken,
    #[error("{0}")]
    InvalidToken(#[from] TokenError),
    #[error("the ticket is unknown, expired or already used")]
    InvalidTicket,
    #[error("the token's user no longer exists")]
    UnknownUser,
    #[error("not found")]
    NotFound,
    #[error("a dependency is unavailable")]
    Unavailable(String),
    #[error("too many requests; retry later")]
    RateLimited(Duration),
    #[error("the server is busy; retry later")]
    Busy(Duration),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Self::MissingToken => (StatusCode::UNAUTHORIZED, "MISSING_TOKEN"),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "INVALID_TOKEN"),
            Self::InvalidTicket => (StatusCode::UNAUTHORIZED, "INVALID_TICKET"),
            Self::UnknownUser => (StatusCode::UNAUTHORIZED, "UNKNOWN_USER"),
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "BUSY"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<crate::limits::Busy> for ApiError {
    fn from(busy: crate::limits::Busy) -> Self {
        Self::Busy(busy.0)
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Unavailable(cause) = &self {
            tracing::error!(%cause, "request failed on a dependency");
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if let Self::RateLimited(wait) | Self::Busy(wait) = &self {
            let secs = wait.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

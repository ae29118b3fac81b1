//! `POST /api/auth/login` (alias `/auth/login`), `/api/auth/refresh`, `/api/auth/demo` and
//! `/api/websocket/ticket`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{TokenError, TokenType, unix_now};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{RefreshRecord, RefreshUse, UserRecord};

#[derive(Debug, Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

/// The body of every successful login, refresh and demo call.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: Value,
}

/// Parses a JSON body whatever its content type; any failure is a 422 with the reason.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidBody(format!("invalid request body: {e}")))
}

/// A token lifetime, capped for demo users: their tokens end with the user.
fn ttl_for(state: &AppState, user: &UserRecord, ttl: u64) -> u64 {
    if user.is_demo {
        ttl.min(state.demo_users.ttl().as_secs())
    } else {
        ttl
    }
}

/// The tokens of a login or a refresh; the refresh token's `jti` is `refresh_jti`, already
/// stored.
fn tokens_for(state: &AppState, user: &UserRecord, refresh_jti: Uuid) -> TokenResponse {
    let access_ttl = ttl_for(state, user, state.config.access_ttl_secs);
    TokenResponse {
        access_token: state
            .tokens
            .issue(user.id, &user.email, TokenType::Access, access_ttl),
        refresh_token: state.tokens.issue_with_jti(
            user.id,
            &user.email,
            TokenType::Refresh,
            ttl_for(state, user, state.config.refresh_ttl_secs),
            refresh_jti,
        ),
        token_type: "Bearer",
        expires_in: access_ttl,
        user: json!({ "id": user.id, "email": user.email, "name": user.name }),
    }
}

/// The tokens of a new session (login, demo): its refresh token starts a family.
async fn new_session(state: &AppState, user: &UserRecord) -> Result<TokenResponse, ApiError> {
    let jti = Uuid::new_v4();
    let ttl = ttl_for(state, user, state.config.refresh_ttl_secs);
    state
        .store
        .store_refresh(RefreshRecord {
            jti,
            family: Uuid::new_v4(),
            user_id: user.id,
            expires_at: unix_now() + ttl,
        })
        .await?;
    Ok(tokens_for(state, user, jti))
}

/// The peer address of the request, when the server was started with connect info (always,
/// through [`crate::serve`]).
pub struct ClientIp(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// Counts a login or demo request against its client address: `429` beyond the allowance.
fn limit_client(state: &AppState, ip: &ClientIp) -> Result<(), ApiError> {
    if let Some(ip) = ip.0 {
        state.login_ip.take(&ip).map_err(|wait| {
            state.metrics.logins_limited.inc();
            ApiError::RateLimited(wait)
        })?;
    }
    Ok(())
}

pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let request: LoginRequest = parse_body(&body)?;
    if request.email.trim().is_empty() || request.password.is_empty() {
        return Err(ApiError::InvalidBody(
            "email and password must not be empty".into(),
        ));
    }
    // The limits are checked before the store and the hash: a refused login costs neither.
    limit_client(&state, &ip)?;
    let account = request.email.trim().to_lowercase();
    state.login_failures.check(&account).map_err(|wait| {
        state.metrics.logins_limited.inc();
        ApiError::RateLimited(wait)
    })?;
    let user = state.store.user_by_email(request.email.trim()).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| state.dummy_hash.clone(), |u| u.password_hash.clone());
    let ok = state
        .passwords
        .verify(request.password, hash)
        .await
        .inspect_err(|_| {
            state.metrics.logins_busy.inc();
        })?;
    match user {
        Some(user) if ok => {
            state.metrics.logins_ok.inc();
            tracing::info!(user_id = %user.id, "login");
            Ok(Json(new_session(&state, &user).await?))
        }
        _ => {
            state.metrics.logins_failed.inc();
            state.login_failures.charge(&account);
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// Spends the refresh token and answers with its successor. A refresh token presented a
/// second time means a copy is in other hands: its family (every token rotated from the same
/// login) is revoked, for whoever holds it.
pub async fn refresh(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<TokenResponse>, ApiError> {
    let request: RefreshRequest = parse_body(&body)?;
    let claims = state
        .tokens
        .verify(&request.refresh_token, TokenType::Refresh)?;
    let user = state
        .store
        .user_by_id(claims.sub)
        .await?
        .ok_or(ApiError::UnknownUser)?;
    let next = Uuid::new_v4();
    let ttl = ttl_for(&state, &user, state.config.refresh_ttl_secs);
    let now = unix_now();
    match state
        .store
        .rotate_refresh(claims.jti, now, next, now + ttl)
        .await?
    {
        RefreshUse::Rotated => Ok(Json(tokens_for(&state, &user, next))),
        RefreshUse::Reused => {
            tracing::warn!(user_id = %user.id, jti = %claims.jti,
                "a spent refresh token was presented again: its family is revoked");
            Err(TokenError::Revoked.into())
        }
        RefreshUse::Refused => Err(TokenError::Revoked.into()),
    }
}

/// Demo mode only: a fresh user per call, never one shared identity. At most
/// `--demo-max-users` live at once; each lives `--demo-ttl-secs` (its tokens no longer), then
/// is deleted.
pub async fn demo(
    State(state): State<AppState>,
    ip: ClientIp,
) -> Result<Json<TokenResponse>, ApiError> {
    if !state.config.demo_mode {
        return Err(ApiError::NotFound);
    }
    limit_client(&state, &ip)?;
    let now = Instant::now();
    for expired in state.demo_users.expired(now) {
        state.store.delete_user(expired).await?;
    }
    let id = Uuid::new_v4();
    state.demo_users.admit(id, now).map_err(ApiError::Busy)?;
    let user = UserRecord {
        id,
        email: format!("demo-{}@demo.apex.test", id.simple()),
        name: "Demo user".into(),
        // Not a PHC string: no password ever verifies against it.
        password_hash: "!demo".into(),
        is_demo: true,
    };
    state.store.upsert_user(user.clone()).await?;
    tracing::info!(user_id = %id, "demo user issued");
    Ok(Json(new_session(&state, &user).await?))
}

/// Resolves the request's bearer access token to its user.
pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let token = super::request_bearer(headers).ok_or(ApiError::MissingToken)??;
    user_for_token(state, token).await
}

/// Verifies an access token and loads its user.
pub async fn user_for_token(state: &AppState, token: &str) -> Result<UserRecord, ApiError> {
    let claims = state.tokens.verify(token, TokenType::Access)?;
    state
        .store
        .user_by_id(claims.sub)
        .await?
        .ok_or(ApiError::UnknownUser)
}

pub async fn ticket(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let user = authenticate(&state, &headers).await?;
    let ttl = state.config.ticket_ttl_secs;
    let mut ticket = new_ticket();
    let issued = state
        .bus
        .issue_ticket(&ticket, user.id, Duration::from_secs(ttl))
        .await;
    if let Err(e) = issued {
        // The failed write may still have landed: that ticket is never handed out. When the
        // failure degraded the bus, a fresh ticket is kept in this instance only.
        if !state.bus.is_degraded() {
            return Err(e.into());
        }
        ticket = new_ticket();
        state
            .bus
            .issue_ticket(&ticket, user.id, Duration::from_secs(ttl))
            .await?;
    }
    Ok(Json(json!({ "ticket": ticket, "expires_in": ttl })))
}

/// 24 random bytes, hex-encoded.
fn new_ticket() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

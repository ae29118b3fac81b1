//! The client side of a journey: login over HTTP, a WebSocket connection by any transport,
//! and every received frame recorded in a [`Transcript`]. Failures come back classified
//! (`auth_rejected`, `handshake_failed`, `timeout`, `ws_1011`, `connection_lost`), never as
//! a bare "error". `http://`/`ws://` and, with rustls, `https://`/`wss://` targets. A target
//! that cannot be used at all (its URL, its CA file, its HTTP client) is a [`ClientError`]
//! instead: no journey starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::profile::{TargetSettings, lookup};
use crate::verify::{FailureClass, Transcript};

/// A classified client failure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ClientFailure {
    pub class: FailureClass,
    pub message: String,
    /// The HTTP status of a refused login or upgrade.
    pub status: Option<u16>,
}

fn failure(class: FailureClass, message: impl Into<String>) -> ClientFailure {
    ClientFailure {
        class,
        message: message.into(),
        status: None,
    }
}

fn refused(class: FailureClass, message: String, status: u16) -> ClientFailure {
    ClientFailure {
        status: Some(status),
        ..failure(class, message)
    }
}

/// Why a target cannot be used: its URL, its CA file, or the HTTP client for it. These stop
/// a run before any journey (bad usage, or a scenario that cannot start), unlike a
/// [`ClientFailure`], which is one journey's classified failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: unsupported scheme `{scheme}`")]
    UnsupportedScheme { url: String, scheme: String },
    #[error(
        "{url}: a query on an http(s) target means nothing; for the WebSocket's query use a \
         ws(s):// URL or `--target-setting ws.query=…`"
    )]
    QueryOnHttp { url: String },
    #[error("{url}: no host")]
    NoHost { url: String },
    #[error("CA certificate refused: {0}")]
    CaRefused(rustls::Error),
    /// The CA file cannot be read, or is not PEM.
    #[error("{}: {error}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}: no certificate in it", path.display())]
    NoCertificate { path: std::path::PathBuf },
    #[error("fault proxy {addr}: {error}")]
    FaultProxy {
        addr: std::net::SocketAddr,
        error: reqwest::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
}

/// Where the backend is: `http://host:port`, `https://host`, `ws://…` or `wss://…`.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// An `http(s)://host/prefix` URL's path: put before every route (a deployment behind a
    /// path prefix). Empty for none.
    pub prefix: String,
    /// A `ws(s)://host/path?query` URL's path and query: the WebSocket to open, instead of
    /// the profile's `ws.path`.
    pub ws_path: Option<String>,
    /// Set for `https://` / `wss://` targets: rustls (ring) with the Mozilla roots plus any
    /// extra CA given with [`Target::trust_ca`].
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect here instead of to `authority`, which still names the server (TLS server name,
    /// `Host`): a fault proxy in front of an `https://` target. HTTP goes through it as an
    /// HTTP CONNECT proxy, WebSocket connections straight to it.
    pub connect_to: Option<std::net::SocketAddr>,
}

/// Installs the process-wide rustls provider (ring). Any `reqwest::Client` built in a process
/// that links the harness needs it first (reqwest is built without its own provider, to keep
/// the aws-lc C build out); installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls_config(
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone()).map_err(ClientError::CaRefused)?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

impl Target {
    /// Parses `http(s)://host[:port][/prefix]`, `ws(s)://host[:port][/path[?query]]` or
    /// `host:port`. An http(s) path is a prefix for every route; a ws(s) path (and query) is
    /// the WebSocket to open. Neither is dropped.
    pub fn parse(url: &str) -> Result<Self, ClientError> {
        let (tls, websocket, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, false, rest),
            Some(("ws", rest)) => (false, true, rest),
            Some(("https", rest)) => (true, false, rest),
            Some(("wss", rest)) => (true, true, rest),
            Some((scheme, _)) => {
                return Err(ClientError::UnsupportedScheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            None => (false, false, url),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let (prefix, ws_path) = match (websocket, path.as_str()) {
            (_, "" | "/") => (String::new(), None),
            (true, _) => (String::new(), Some(path.clone())),
            (false, _) if path.contains('?') => {
                return Err(ClientError::QueryOnHttp {
                    url: url.to_owned(),
                });
            }
            (false, _) => (path.trim_end_matches('/').to_owned(), None),
        };
        if authority.is_empty() {
            return Err(ClientError::NoHost {
                url: url.to_owned(),
            });
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let tls = if tls { Some(tls_config(&[])?) } else { None };
        Ok(Self {
            authority,
            prefix,
            ws_path,
            tls,
            connect_to: None,
        })
    }

    /// Also trusts the CA certificates in a PEM file (a staging environment's private CA).
    pub fn trust_ca(mut self, pem_file: &std::path::Path) -> Result<Self, ClientError> {
        let unreadable = |error| ClientError::CaFile {
            path: pem_file.to_owned(),
            error,
        };
        let pem = std::fs::read(pem_file).map_err(unreadable)?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        if certs.is_empty() {
            return Err(ClientError::NoCertificate {
                path: pem_file.to_owned(),
            });
        }
        if self.tls.is_some() {
            self.tls = Some(tls_config(&certs)?);
        }
        Ok(self)
    }

    pub fn http(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}{path}", self.authority, self.prefix)
    }

    /// The WebSocket URL: the target URL's own ws path if it had one, else `path` (the
    /// profile's), with `query` parameters added (`a=1&b=2`, may be empty).
    pub fn ws(&self, path: &str, query: &str) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let path = match &self.ws_path {
            Some(own) => own.clone(),
            None => format!("{}{path}", self.prefix),
        };
        let joiner = if path.contains('?') { '&' } else { '?' };
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("{joiner}{query}")
        };
        format!("{scheme}://{}{path}{query}", self.authority)
    }

    /// An HTTP client for this target (its TLS settings and fault-proxy routing included).
    /// A client that cannot be built is an error: a default client would silently drop the
    /// custom CA and the proxy.
    pub fn http_client(&self) -> Result<reqwest::Client, ClientError> {
        install_crypto_provider();
        let builder = reqwest::Client::builder();
        let builder = match &self.tls {
            Some(config) => builder.tls_backend_preconfigured((**config).clone()),
            None => builder,
        };
        let builder = match self.connect_to {
            Some(addr) => builder.proxy(
                reqwest::Proxy::all(format!("http://{addr}"))
                    .map_err(|error| ClientError::FaultProxy { addr, error })?,
            ),
            None => builder,
        };
        build_http_client(builder)
    }
}

fn build_http_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ClientError> {
    builder.build().map_err(ClientError::HttpClient)
}

/// Sends a request; when it failed before any answer arrived (a pooled keep-alive connection
/// the server had just closed, a reset), sends it once more: the failed connection is gone
/// from the pool, so the second try goes out on a fresh one. Only for requests that are
/// safe to repeat (login, tickets, idempotent methods). A timeout is never retried.
pub async fn send_retrying(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let again = request.try_clone();
    match request.send().await {
        Err(e) if (e.is_request() || e.is_connect()) && !e.is_timeout() => match again {
            Some(again) => again.send().await,
            None => Err(e),
        },
        answered => answered,
    }
}

/// How the client presents its credentials to `/ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: jwt-auth, jwt.<token>`.
    Subprotocol,
    /// A single-use ticket from `POST /api/websocket/ticket` in `?ticket=`.
    Ticket,
    /// Only `X-Original-Authorization`, as after a load balancer stripped `Authorization`.
    LbPreserved,
    /// No credentials at all.
    None,
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub email: String,
    pub user_id: Option<String>,
    pub access_token: String,
}

/// `POST /api/auth/login` with the apex contract's fields; see [`login_with`].
pub async fn login(
    http: &reqwest::Client,
    target: &Target,
    email: &str,
    password: &str,
    timeout: Duration,
) -> Result<Session, ClientFailure> {
    login_with(
        http,
        target,
        &TargetSettings::default(),
        email,
        password,
        timeout,
    )
    .await
}

/// A request that got no answer: `unreachable` when the server could not be reached or
/// dropped the request (connect refused, DNS, TLS, reset), `timeout` when it did not answer
/// in time.
fn unanswered(what: &str, url: &str, e: &reqwest::Error) -> ClientFailure {
    let class = if e.is_timeout() && !e.is_connect() {
        FailureClass::Timeout
    } else {
        FailureClass::Unreachable
    };
    failure(class, format!("{what} {url}: {e}"))
}

/// A body for a message: its text, cut at 300 characters.
fn body_text(body: &str) -> String {
    let cut: String = body.chars().take(300).collect();
    if cut.len() < body.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

/// Logs in as the platform's settings say (route, body fields, where the token and user
/// id are). A 401/403 is `auth_rejected`; any other answer that is not a success is
/// `http_error` with the route, status and body: the server is there, the journey failed.
pub async fn login_with(
    http: &reqwest::Client,
    target: &Target,
    settings: &TargetSettings,
    email: &str,
    password: &str,
    timeout: Duration,
) -> Result<Session, ClientFailure> {
    let url = target.http(settings.login_path());
    let mut body = serde_json::Map::new();
    body.insert(settings.login_email_field().to_owned(), json!(email));
    body.insert(settings.login_password_field().to_owned(), json!(password));
    let request = http.post(&url).json(&body).timeout(timeout);
    let response = send_retrying(request)
        .await
        .map_err(|e| unanswered("login at", &url, &e))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.as_u16() == 401 || status.as_u16() == 403 {
        return Err(refused(
            FailureClass::AuthRejected,
            format!(
                "login of {email} at {url} refused with {status}: {}",
                body_text(&text)
            ),
            status.as_u16(),
        ));
    }
    if !status.is_success() {
        return Err(refused(
            FailureClass::HttpError,
            format!("login at {url} answered {status}: {}", body_text(&text)),
            status.as_u16(),
        ));
    }
    let token_path = settings.login_token();
    let access_token = lookup(&answer, token_path)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            failure(
                FailureClass::ContentMismatch,
                format!(
                    "the login answer has no `{token_path}`: {}",
                    body_text(&text)
                ),
            )
        })?
        .to_owned();
    Ok(Session {
        email: email.to_owned(),
        user_id: lookup(&answer, settings.login_user_id())
            .and_then(Value::as_str)
            .map(str::to_owned),
        access_token,
    })
}

/// A single-use ticket for the upgrade, from the platform's ticket route.
async fn ticket(
    http: &reqwest::Client,
    target: &Target,
    settings: &TargetSettings,
    token: &str,
    timeout: Duration,
) -> Result<String, ClientFailure> {
    let url = target.http(settings.ticket_path());
    let request = http
        .post(&url)
        .bearer_auth(token)
        .json(&json!({}))
        .timeout(timeout);
    let answer = send_retrying(request)
        .await
        .map_err(|e| unanswered("ticket request to", &url, &e))?;
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let field = settings.ticket_field();
    match lookup(&body, field).and_then(Value::as_str) {
        Some(ticket) if status.is_success() => Ok(ticket.to_owned()),
        _ => {
            let class = match status.as_u16() {
                401 | 403 => FailureClass::AuthRejected,
                _ if status.is_success() => FailureClass::ContentMismatch,
                _ => FailureClass::HttpError,
            };
            Err(refused(
                class,
                format!(
                    "no ticket at `{field}` from {url} ({status}): {}",
                    body_text(&text)
                ),
                status.as_u16(),
            ))
        }
    }
}

/// One WebSocket connection and everything it received.
pub struct Connection {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    started: Instant,
    pub transcript: Transcript,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("frames", &self.transcript.frames.len())
            .finish_non_exhaustive()
    }
}

/// Opens `/ws` with the session's credentials presented by `transport`. A 401/403 refusal is
/// `auth_rejected`; any other failure to upgrade is `handshake_failed`; no upgrade within
/// `timeout` is `timeout`.
pub async fn connect(
    http: &reqwest::Client,
    target: &Target,
    session: Option<&Session>,
    transport: Transport,
    timeout: Duration,
) -> Result<Connection, ClientFailure> {
    let token = session.map(|s| s.access_token.as_str());
    let settings = TargetSettings::default();
    connect_with(http, target, &settings, token, transport, timeout, "").await
}

/// [`connect`] with an explicit token (or none) and extra query parameters
/// (`last_seq=N`).
#[allow(clippy::too_many_arguments)]
pub async fn connect_with(
    http: &reqwest::Client,
    target: &Target,
    settings: &TargetSettings,
    token: Option<&str>,
    transport: Transport,
    timeout: Duration,
    extra_query: &str,
) -> Result<Connection, ClientFailure> {
    let token = token.unwrap_or_default();
    let mut query: Vec<String> = [settings.ws_query(), extra_query]
        .into_iter()
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect();
    if transport == Transport::Ticket {
        let ticket = ticket(http, target, settings, token, timeout).await?;
        query.push(format!("{}={ticket}", settings.ticket_param()));
    }
    let mut request = target
        .ws(settings.ws_path(), &query.join("&"))
        .into_client_request()
        .map_err(|e| failure(FailureClass::HandshakeFailed, e.to_string()))?;
    present_credentials(request.headers_mut(), transport, token)?;
    let (stream, response) = tokio::time::timeout(timeout, upgrade(target, request))
        .await
        .map_err(|_| {
            failure(
                FailureClass::Timeout,
                format!("no WebSocket upgrade within {timeout:?}"),
            )
        })??;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Connection {
        stream,
        started: Instant::now(),
        transcript: Transcript::default(),
        protocol,
    })
}

/// Puts the token where `transport` presents it (a ticket is already in the query).
fn present_credentials(
    headers: &mut tungstenite::http::HeaderMap,
    transport: Transport,
    token: &str,
) -> Result<(), ClientFailure> {
    let header = |value: String| {
        HeaderValue::from_str(&value).map_err(|_| {
            failure(
                FailureClass::HandshakeFailed,
                "token is not a valid header value",
            )
        })
    };
    match transport {
        Transport::Header => {
            headers.insert("authorization", header(format!("Bearer {token}"))?);
        }
        Transport::LbPreserved => {
            headers.insert(
                "x-original-authorization",
                header(format!("Bearer {token}"))?,
            );
        }
        Transport::Subprotocol => {
            headers.insert(
                "sec-websocket-protocol",
                header(format!("jwt-auth, jwt.{token}"))?,
            );
        }
        Transport::Ticket | Transport::None => {}
    }
    Ok(())
}

/// The WebSocket upgrade: TCP (to the fault proxy when there is one), TLS for `wss`, then
/// the HTTP upgrade, each failure classified.
async fn upgrade(
    target: &Target,
    request: tungstenite::handshake::client::Request,
) -> Result<
    (
        WebSocketStream<MaybeTlsStream<TcpStream>>,
        tungstenite::handshake::client::Response,
    ),
    ClientFailure,
> {
    let tcp = match target.connect_to {
        Some(addr) => TcpStream::connect(addr).await,
        None => TcpStream::connect(&target.authority).await,
    };
    let tcp = tcp.map_err(|e| {
        failure(
            FailureClass::Unreachable,
            format!("cannot reach {}: {e}", target.authority),
        )
    })?;
    // The server writes each event as its own frame; Nagle would hold them back.
    let _ = tcp.set_nodelay(true);
    let connector = match &target.tls {
        Some(config) => Connector::Rustls(config.clone()),
        None => Connector::Plain,
    };
    // Frames are a few KiB: a small read buffer (it grows for a larger one) instead of the
    // default 128 KiB, which made a connected virtual user cost ~150 KiB of memory.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), Some(connector))
        .await
        .map_err(upgrade_failure)
}

/// The WebSocket read buffer of a connection (benches/vus-capacity.sh measures its effect).
const READ_BUFFER: usize = 8 * 1024;

/// A failed upgrade, classified: a 401/403 answer is `auth_rejected`, another answer
/// `handshake_failed`; TLS and I/O failures mean the server could not be reached.
fn upgrade_failure(error: tungstenite::Error) -> ClientFailure {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let class = if matches!(status.as_u16(), 401 | 403) {
                FailureClass::AuthRejected
            } else {
                FailureClass::HandshakeFailed
            };
            refused(
                class,
                format!("upgrade refused with {status}: {body}"),
                status.as_u16(),
            )
        }
        tungstenite::Error::Tls(e) => failure(
            FailureClass::Unreachable,
            format!("TLS handshake failed: {e}"),
        ),
        tungstenite::Error::Io(e) => failure(
            FailureClass::Unreachable,
            format!("the connection failed during the upgrade: {e}"),
        ),
        other => failure(
            FailureClass::HandshakeFailed,
            format!("handshake failed: {other}"),
        ),
    }
}

impl Connection {
    pub async fn send_json(&mut self, frame: &Value) -> Result<(), ClientFailure> {
        self.send_text(frame.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) -> Result<(), ClientFailure> {
        self.stream
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| failure(FailureClass::HandshakeFailed, format!("send failed: {e}")))
    }

    /// The next frame, recorded in the transcript; `Ok(None)` once the server closed the
    /// connection (its close code and reason are recorded; 1011 is reported as `ws_1011`). A
    /// connection that ends without a close frame is `connection_lost`; no frame within
    /// `timeout` is `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Value>, ClientFailure> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| {
                    failure(
                        FailureClass::Timeout,
                        format!("no frame within {timeout:?}"),
                    )
                })?;
            match self.record(message) {
                Received::Frame(value) => return Ok(Some(value)),
                Received::Closed => {
                    return match self.transcript.close_code {
                        Some(1011) => Err(failure(
                            FailureClass::Ws1011,
                            format!("the server closed with {}", self.close_text()),
                        )),
                        _ => Ok(None),
                    };
                }
                Received::Lost(why) => {
                    return Err(failure(
                        FailureClass::ConnectionLost,
                        format!("the connection was lost without a close frame: {why}"),
                    ));
                }
                Received::Other => continue,
            }
        }
    }

    /// How the server closed, for messages: `1000 "main cleanup"`.
    pub fn close_text(&self) -> String {
        self.transcript.close_text()
    }

    /// Records what the socket produced in the transcript.
    fn record(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Received {
        match message {
            Some(Ok(Message::Text(text))) => {
                self.transcript.bytes_received += text.len() as u64;
                let value: Value =
                    serde_json::from_str(&text).unwrap_or(Value::String(text.to_string()));
                if value.get("type").and_then(Value::as_str) == Some(crate::verify::RESYNC) {
                    self.transcript.resyncs += 1;
                }
                self.transcript.push(self.started.elapsed(), value.clone());
                Received::Frame(value)
            }
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    self.transcript.close_code = Some(u16::from(frame.code));
                    self.transcript.close_reason = Some(frame.reason.to_string());
                }
                Received::Closed
            }
            Some(Ok(_)) => Received::Other,
            Some(Err(tungstenite::Error::ConnectionClosed)) => Received::Closed,
            Some(Err(e)) => {
                self.transcript.lost = Some(e.to_string());
                Received::Lost(e.to_string())
            }
            None => {
                let why = "the stream ended (1006)".to_owned();
                self.transcript.lost = Some(why.clone());
                Received::Lost(why)
            }
        }
    }

    /// Closes the connection and hands back what it received. Frames the server sent before
    /// it saw our close (a late duplicate, a leak after `agent_completed`) are read into the
    /// transcript until the server's close arrives, at most [`DRAIN`] later, so the
    /// invariants see them.
    pub async fn close(mut self) -> Transcript {
        let open = self.transcript.close_code.is_none() && self.transcript.lost.is_none();
        if open && self.stream.close(None).await.is_ok() {
            let before = self.transcript.frames.len();
            let deadline = tokio::time::Instant::now() + DRAIN;
            while let Ok(message) = tokio::time::timeout_at(deadline, self.stream.next()).await {
                if !matches!(self.record(message), Received::Frame(_) | Received::Other) {
                    break;
                }
            }
            self.transcript.after_close = self.transcript.frames.len() - before;
        }
        self.transcript
    }
}

/// How long [`Connection::close`] reads on after sending its close frame.
pub const DRAIN: Duration = Duration::from_secs(1);

/// One read from the socket, as recorded.
enum Received {
    Frame(Value),
    Closed,
    Lost(String),
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_client_that_cannot_be_built_is_an_error_not_a_default() {
        // A TLS backend reqwest does not know: the build fails, and so must we.
        let broken = reqwest::Client::builder().tls_backend_preconfigured(42_u8);
        let error = build_http_client(broken).unwrap_err();
        assert!(matches!(error, ClientError::HttpClient(_)), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("cannot build the HTTP client: "),
            "{error}"
        );
        assert!(
            Target::parse("http://127.0.0.1:1")
                .unwrap()
                .http_client()
                .is_ok()
        );
    }

    #[test]
    fn targets_accept_plain_and_tls_urls() {
        let plain = Target::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(
            (plain.authority.as_str(), plain.tls.is_some()),
            ("127.0.0.1:8000", false)
        );
        assert_eq!(
            Target::parse("ws://localhost:9/ws")
                .unwrap()
                .ws("/other", "ticket=t"),
            "ws://localhost:9/ws?ticket=t"
        );
        // A ws:// URL's path and query are the socket; an http:// path is a route prefix.
        let demo = Target::parse("ws://host:1/api/demo/ws?mode=x").unwrap();
        assert_eq!(demo.ws("/ws", ""), "ws://host:1/api/demo/ws?mode=x");
        assert_eq!(demo.ws("/ws", "a=1"), "ws://host:1/api/demo/ws?mode=x&a=1");
        let staged = Target::parse("https://host/staging/").unwrap();
        assert_eq!(
            staged.http("/auth/login"),
            "https://host:443/staging/auth/login"
        );
        assert_eq!(staged.ws("/ws", ""), "wss://host:443/staging/ws");
        assert!(matches!(
            Target::parse("http://host/x?y=1"),
            Err(ClientError::QueryOnHttp { .. })
        ));
        assert_eq!(
            Target::parse("example.test").unwrap().authority,
            "example.test:80"
        );
        let tls = Target::parse("wss://staging.example.test").unwrap();
        assert_eq!(tls.authority, "staging.example.test:443");
        assert_eq!(tls.http("/ready"), "https://staging.example.test:443/ready");
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(ClientError::UnsupportedScheme { .. })
        ));
    }
}

//! A fault-injecting TCP proxy on `127.0.0.1:0`, with toxiproxy's semantics (per direction:
//! `upstream` is client → server, `downstream` server → client) plus two that know the
//! protocols: close after N WebSocket frames, and rewriting the headers of the HTTP request
//! that opens a connection (what a load balancer does to `Authorization`).
//!
//! Toxics are read for every chunk, so turning one on or off acts on open connections too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Which way a toxic acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client → server.
    Upstream,
    /// Server → client.
    Downstream,
    #[default]
    Both,
}

impl Direction {
    fn covers(self, upstream: bool) -> bool {
        match self {
            Self::Both => true,
            Self::Upstream => upstream,
            Self::Downstream => !upstream,
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Toxic {
    /// Each chunk waits `delay` ± up to `jitter`, in order.
    Latency { delay: Duration, jitter: Duration },
    /// Throughput capped at this many bytes per second.
    Bandwidth { bytes_per_sec: u64 },
    /// Writes split into pieces of `size` ± `variation` bytes, `delay` apart.
    Slicer {
        size: usize,
        variation: usize,
        delay: Duration,
    },
    /// Data is dropped; the connection closes after `after` (never when zero).
    Timeout { after: Duration },
    /// On the first data, waits `after`, then resets the connection (RST).
    ResetPeer { after: Duration },
    /// The connection closes once this many bytes have passed.
    LimitData { bytes: u64 },
    /// Downstream: the connection is cut (no close frame) after this many complete
    /// WebSocket frames from the server.
    CloseAfterFrames { frames: u64 },
    /// Upstream: this header is removed from the request that opens the connection.
    StripHeader { name: String },
    /// Upstream: this header is set on the request that opens the connection.
    SetHeader { name: String, value: String },
    /// New connections are refused and open ones cut.
    Down,
}

#[derive(Debug, Clone, PartialEq)]
struct Active {
    id: u64,
    direction: Direction,
    toxic: Toxic,
}

#[derive(Debug, Default)]
struct Shared {
    toxics: Vec<Active>,
    next_id: u64,
}

/// A running proxy; dropping it stops listening and cuts every connection.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    accept_connect: bool,
    shared: Arc<Mutex<Shared>>,
    /// Bumped to cut every open connection (`Down`, [`FaultProxy::cut_all`]).
    cut: watch::Sender<u64>,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(watch::Sender<u64>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(upstream, false).await
    }

    /// [`FaultProxy::start`]; with `accept_connect`, a client may open with an HTTP `CONNECT`
    /// (an HTTPS client using the proxy as its proxy).
    pub async fn start_with(upstream: SocketAddr, accept_connect: bool) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (cut, _) = watch::channel(0u64);
        let (stop, mut stopped) = watch::channel(0u64);
        let proxy = Self {
            addr,
            upstream,
            accept_connect,
            shared: shared.clone(),
            cut: cut.clone(),
            _stop: Arc::new(StopOnDrop(stop)),
        };
        let accepting = proxy.clone_inner();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stopped.changed() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                if accepting.has(|t| matches!(t, Toxic::Down)) {
                    drop(client);
                    continue;
                }
                tokio::spawn(accepting.clone().serve(client));
            }
        });
        Ok(proxy)
    }

    /// What a connection task needs (no stop guard, so connections do not keep it alive).
    fn clone_inner(&self) -> Inner {
        Inner {
            upstream: self.upstream,
            shared: self.shared.clone(),
            cut: self.cut.clone(),
            accept_connect: self.accept_connect,
        }
    }

    /// A proxy in front of the service a `redis://` or `postgres://` URL points at, and that
    /// URL rewritten to go through it (credentials, database and query kept).
    pub async fn in_front_of(url: &str) -> std::io::Result<(Self, String)> {
        let invalid = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{what}: {}", url.split('@').next_back().unwrap_or(url)),
            )
        };
        let default_port = if url.starts_with("redis") { 6379 } else { 5432 };
        let authority = url_authority(url, default_port)
            .ok_or_else(|| invalid("no host in the service URL"))?;
        let upstream = tokio::net::lookup_host(&authority)
            .await?
            .next()
            .ok_or_else(|| invalid("the service's host does not resolve"))?;
        let proxy = Self::start(upstream).await?;
        let through = url_through(url, proxy.addr).ok_or_else(|| invalid("cannot rewrite"))?;
        Ok((proxy, through))
    }

    /// Adds a toxic; returns its id for [`FaultProxy::remove`].
    pub fn add(&self, direction: Direction, toxic: Toxic) -> u64 {
        let down = toxic == Toxic::Down;
        let id = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.next_id += 1;
            let id = shared.next_id;
            shared.toxics.push(Active {
                id,
                direction,
                toxic,
            });
            id
        };
        if down {
            self.cut_all();
        }
        id
    }

    pub fn remove(&self, id: u64) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.toxics.retain(|t| t.id != id);
    }

    pub fn clear(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.toxics.clear();
    }

    /// Cuts every open connection.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[derive(Debug, Clone)]
struct Inner {
    upstream: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    cut: watch::Sender<u64>,
    /// Answer an HTTP `CONNECT` first (an HTTPS client using this as its proxy).
    accept_connect: bool,
}

/// If the client opens with `CONNECT host:port`, consumes that request and answers 200; the
/// tunnel then goes to the proxy's upstream whatever host was named. Anything else is left
/// unread for the pumps.
async fn answer_connect(client: &mut TcpStream) -> std::io::Result<()> {
    let mut first = [0u8; 8];
    let n = client.peek(&mut first).await?;
    if !first[..n].starts_with(b"CONNECT ") {
        return Ok(());
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        head.push(byte[0]);
    }
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
}

/// A uniform pseudo-random number in `0..n` (jitter and slice sizes need no quality).
fn random_below(n: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    if n == 0 {
        return 0;
    }
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % n
}

/// The length of the first complete WebSocket frame in `buf`, if it holds one.
fn ws_frame_len(buf: &[u8]) -> Option<usize> {
    let (b1, rest) = (*buf.get(1)?, buf.get(2..)?);
    let masked = b1 & 0x80 != 0;
    let (len, header) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize,
            4,
        ),
        127 => {
            let bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let total = header + if masked { 4 } else { 0 } + len;
    (buf.len() >= total).then_some(total)
}

/// The request head with the header-rewriting toxics applied (only until the end of the
/// first request's headers; the rest passes untouched).
fn rewrite_head(head: &str, toxics: &[Toxic]) -> String {
    let mut lines: Vec<String> = head.split("\r\n").map(str::to_owned).collect();
    for toxic in toxics {
        match toxic {
            Toxic::StripHeader { name } => lines.retain(|l| {
                !l.split_once(':')
                    .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            }),
            Toxic::SetHeader { name, value } => {
                lines.retain(|l| {
                    !l.split_once(':')
                        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                });
                // After the request line, before the blank line that ends the head.
                lines.insert(1.min(lines.len()), format!("{name}: {value}"));
            }
            _ => {}
        }
    }
    lines.join("\r\n")
}

impl Inner {
    fn toxics(&self, upstream: bool) -> Vec<Toxic> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .toxics
            .iter()
            .filter(|t| t.direction.covers(upstream))
            .map(|t| t.toxic.clone())
            .collect()
    }

    fn has(&self, test: impl Fn(&Toxic) -> bool) -> bool {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.toxics.iter().any(|t| test(&t.toxic))
    }

    async fn serve(self, mut client: TcpStream) {
        if self.accept_connect && answer_connect(&mut client).await.is_err() {
            return;
        }
        let Ok(mut server) = TcpStream::connect(self.upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let mut cut = self.cut.subscribe();
        let reset = {
            let (cr, cw) = client.split();
            let (sr, sw) = server.split();
            tokio::select! {
                r = self.pump(cr, sw, true) => r,
                r = self.pump(sr, cw, false) => r,
                _ = cut.changed() => End::Reset,
            }
        };
        if reset == End::Reset {
            // SO_LINGER 0: closing sends RST instead of FIN.
            let _ = client.set_zero_linger();
        }
    }

    /// Copies one direction through the toxics; returns how the connection should end.
    async fn pump(
        &self,
        mut from: tokio::net::tcp::ReadHalf<'_>,
        mut to: tokio::net::tcp::WriteHalf<'_>,
        upstream: bool,
    ) -> End {
        let mut buf = vec![0u8; 16 * 1024];
        // Only a connection opened while a header toxic is on is read as HTTP.
        let rewrites =
            self.has(|t| matches!(t, Toxic::StripHeader { .. } | Toxic::SetHeader { .. }));
        let mut pump = Pump {
            upstream,
            head: (upstream && rewrites).then(Vec::new),
            ..Pump::default()
        };
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return End::Closed;
                }
                Ok(n) => n,
            };
            let toxics = self.toxics(upstream);
            let Some(mut data) = pump.rewritten_head(&buf[..n], &toxics) else {
                continue;
            };
            if let Err(end) = pump.stop_or_drop(&toxics, &mut data).await {
                return end;
            }
            if data.is_empty() {
                continue;
            }
            let close_after = pump.limit(&toxics, &mut data);
            delay(&toxics).await;
            if let Err(end) = pump.write(&mut to, &toxics, &data).await {
                return end;
            }
            if let Some(end) = close_after {
                return end;
            }
        }
    }
}

/// One direction of a proxied connection: what it has passed so far.
#[derive(Debug, Default)]
struct Pump {
    /// Client to server.
    upstream: bool,
    /// Bytes written on.
    passed: u64,
    /// Complete WebSocket frames passed on (for `CloseAfterFrames`).
    frames: u64,
    /// Bytes read but not yet counted as whole frames.
    pending_frames: Vec<u8>,
    /// The upgrade's HTTP response has been passed.
    past_http_head: bool,
    /// The response was not a WebSocket upgrade: there are no frames to count.
    not_websocket: bool,
    /// The opening request's head while it is collected for a header rewrite.
    head: Option<Vec<u8>>,
    /// When a `Timeout` toxic started dropping this direction's data.
    blackholed_at: Option<tokio::time::Instant>,
}

impl Pump {
    /// `chunk`, or while the opening request's head is collected, nothing until it is
    /// complete and then the head rewritten by the header toxics.
    fn rewritten_head(&mut self, chunk: &[u8], toxics: &[Toxic]) -> Option<Vec<u8>> {
        let Some(collected) = self.head.as_mut() else {
            return Some(chunk.to_vec());
        };
        collected.extend_from_slice(chunk);
        match collected.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => {
                let text = String::from_utf8_lossy(&collected[..end]).into_owned();
                let mut rewritten = rewrite_head(&text, toxics).into_bytes();
                rewritten.extend_from_slice(&collected[end..]);
                self.head = None;
                Some(rewritten)
            }
            None if collected.len() < 64 * 1024 => None,
            // Not an HTTP request head after all: pass it on unchanged.
            None => self.head.take(),
        }
    }

    /// The toxics that end the connection (`ResetPeer`, `Down`, a `Timeout` that ran out) or
    /// drop its data (`Timeout`).
    async fn stop_or_drop(&mut self, toxics: &[Toxic], data: &mut Vec<u8>) -> Result<(), End> {
        for toxic in toxics {
            match toxic {
                Toxic::Timeout { after } => {
                    let since = *self
                        .blackholed_at
                        .get_or_insert_with(tokio::time::Instant::now);
                    if !after.is_zero() && since.elapsed() >= *after {
                        return Err(End::Closed);
                    }
                    data.clear();
                }
                Toxic::ResetPeer { after } => {
                    tokio::time::sleep(*after).await;
                    return Err(End::Reset);
                }
                Toxic::Down => return Err(End::Reset),
                _ => {}
            }
        }
        Ok(())
    }

    /// `data` cut at a data limit or after the frame limit's last frame; how the connection
    /// ends once it is written, if it does.
    fn limit(&mut self, toxics: &[Toxic], data: &mut Vec<u8>) -> Option<End> {
        let mut close_after = None;
        for toxic in toxics {
            match toxic {
                Toxic::LimitData { bytes } => {
                    let room = bytes.saturating_sub(self.passed);
                    if (data.len() as u64) >= room {
                        data.truncate(room as usize);
                        close_after = Some(End::Closed);
                    }
                }
                Toxic::CloseAfterFrames { frames: limit }
                    if !self.upstream && self.count_frames(*limit, data) =>
                {
                    close_after = Some(End::Reset);
                }
                _ => {}
            }
        }
        close_after
    }

    /// Counts the server's WebSocket frames in `data` (after the upgrade's response); once
    /// `limit` is reached, cuts `data` after the limit's last frame and says so.
    fn count_frames(&mut self, limit: u64, data: &mut Vec<u8>) -> bool {
        self.pending_frames.extend_from_slice(data);
        let mut allowed = 0;
        // The upgrade's HTTP response comes before the first frame.
        if !self.past_http_head {
            if !self.pending_frames.starts_with(b"HTTP/") {
                self.past_http_head = true;
            } else if let Some(end) = self
                .pending_frames
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                allowed = end + 4;
                self.past_http_head = true;
                // Only a WebSocket upgrade has frames to count.
                self.not_websocket = !self.pending_frames.starts_with(b"HTTP/1.1 101");
            }
        }
        if self.not_websocket {
            self.pending_frames.clear();
            return false;
        }
        while self.past_http_head && self.frames < limit {
            let Some(len) = ws_frame_len(&self.pending_frames[allowed..]) else {
                break;
            };
            allowed += len;
            self.frames += 1;
        }
        let reached = self.frames >= limit;
        if reached {
            // Everything up to the limit's last frame, then cut.
            let before = self.pending_frames.len() - data.len();
            let keep = allowed.saturating_sub(before).min(data.len());
            data.truncate(keep);
        }
        self.pending_frames
            .drain(..allowed.min(self.pending_frames.len()));
        reached
    }

    /// Writes `data` on, in slices (`Slicer`) or throttled (`Bandwidth`) when asked.
    async fn write(
        &mut self,
        to: &mut tokio::net::tcp::WriteHalf<'_>,
        toxics: &[Toxic],
        data: &[u8],
    ) -> Result<(), End> {
        let slicer = toxics.iter().find_map(|t| match t {
            Toxic::Slicer {
                size,
                variation,
                delay,
            } => Some((*size, *variation, *delay)),
            _ => None,
        });
        let rate = toxics.iter().find_map(|t| match t {
            Toxic::Bandwidth { bytes_per_sec } => Some((*bytes_per_sec).max(1)),
            _ => None,
        });
        let mut rest = data;
        while !rest.is_empty() {
            let piece = match (slicer, rate) {
                (Some((size, variation, _)), _) => {
                    let low = size.saturating_sub(variation).max(1);
                    (low + random_below((2 * variation + 1) as u64) as usize).min(rest.len())
                }
                // A tenth of a second's worth at a time, so a burst is throttled too.
                (None, Some(rate)) => ((rate / 10).max(1) as usize).min(rest.len()),
                (None, None) => rest.len(),
            };
            if to.write_all(&rest[..piece]).await.is_err() {
                return Err(End::Closed);
            }
            self.passed += piece as u64;
            if let Some(rate) = rate {
                tokio::time::sleep(Duration::from_secs_f64(piece as f64 / rate as f64)).await;
            }
            if let Some((_, _, delay)) = slicer {
                tokio::time::sleep(delay).await;
            }
            rest = &rest[piece..];
        }
        Ok(())
    }
}

/// The `Latency` toxics' wait before a chunk goes on.
async fn delay(toxics: &[Toxic]) {
    for toxic in toxics {
        if let Toxic::Latency { delay, jitter } = toxic {
            let jitter_ms = jitter.as_millis() as u64;
            let spread = random_below(2 * jitter_ms + 1);
            let delay = (*delay + Duration::from_millis(spread))
                .saturating_sub(Duration::from_millis(jitter_ms));
            tokio::time::sleep(delay).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Reset,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_frame_lengths_are_read_from_their_headers() {
        assert_eq!(ws_frame_len(&[0x81, 0x02, b'h', b'i']), Some(4));
        assert_eq!(ws_frame_len(&[0x81, 0x02, b'h']), None);
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(ws_frame_len(&long), Some(260));
        // Masked (client) frames carry 4 more bytes.
        assert_eq!(ws_frame_len(&[0x81, 0x81, 1, 2, 3, 4, b'x']), Some(7));
    }

    #[test]
    fn service_urls_are_pointed_through_a_proxy() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let pg = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
        assert_eq!(url_authority(pg, 5432).as_deref(), Some("127.0.0.1:5432"));
        assert_eq!(
            url_through(pg, addr).as_deref(),
            Some("postgres://postgres@127.0.0.1:4000/test?sslmode=disable")
        );
        assert_eq!(
            url_authority("redis://localhost", 6379).as_deref(),
            Some("localhost:6379")
        );
        assert_eq!(
            url_through("redis://localhost", addr).as_deref(),
            Some("redis://127.0.0.1:4000")
        );
    }

    #[test]
    fn header_toxics_rewrite_only_the_named_header() {
        let head = "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nUpgrade: websocket";
        let stripped = rewrite_head(
            head,
            &[Toxic::StripHeader {
                name: "authorization".into(),
            }],
        );
        assert_eq!(
            stripped,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket"
        );
        let set = rewrite_head(
            head,
            &[Toxic::SetHeader {
                name: "X-Original-Authorization".into(),
                value: "Bearer t".into(),
            }],
        );
        assert!(set.starts_with("GET /ws HTTP/1.1\r\nX-Original-Authorization: Bearer t\r\n"));
    }
}

/// Proxies in front of the bundled backend's Redis and Postgres, for `between: redis` and
/// `between: postgres` faults.
#[derive(Debug, Clone, Default)]
pub struct DependencyProxies {
    pub redis: Option<FaultProxy>,
    pub postgres: Option<FaultProxy>,
}

/// `host:port` of a `redis://` or `postgres://` URL, with the scheme's default port.
pub fn url_authority(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host {
        "" => None,
        h if h.contains(':') => Some(h.to_owned()),
        h => Some(format!("{h}:{default_port}")),
    }
}

/// `url` with its host and port replaced by `addr` (credentials, path and query kept).
pub fn url_through(url: &str, addr: SocketAddr) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    Some(format!("{scheme}://{userinfo}{addr}{tail}"))
}

/// A proxy in front of the target, and the target journeys reach it through (an https://
/// target keeps its server name; only its connections go to the proxy).
async fn in_front_of_target(
    specs: &[crate::scenario::FaultSpec],
    target: &crate::client::Target,
) -> Result<(FaultProxy, crate::client::Target), PlaceError> {
    let failed = PlaceError::Failed;
    let tls = target.tls.is_some();
    if tls
        && let Some(spec) = specs.iter().find(|f| {
            matches!(
                f.toxic.toxic(),
                Toxic::StripHeader { .. }
                    | Toxic::SetHeader { .. }
                    | Toxic::CloseAfterFrames { .. }
            )
        })
    {
        return Err(failed(format!(
            "{:?} needs to read the traffic, and an https:// target's is encrypted",
            spec.toxic
        )));
    }
    let upstream = tokio::net::lookup_host(&target.authority)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| failed(format!("cannot resolve the target {}", target.authority)))?;
    let proxy = FaultProxy::start_with(upstream, tls)
        .await
        .map_err(|e| failed(format!("cannot start the fault proxy: {e}")))?;
    let through = if tls {
        crate::client::Target {
            connect_to: Some(proxy.addr),
            ..target.clone()
        }
    } else {
        crate::client::Target {
            authority: proxy.addr.to_string(),
            ..target.clone()
        }
    };
    Ok((proxy, through))
}

/// Switches each enabled fault on at its `at` (at once when zero) and off after its `lasts`.
fn schedule(
    specs: &[crate::scenario::FaultSpec],
    entries: &[Arc<Entry>],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut schedules = Vec::new();
    for (spec, entry) in specs.iter().zip(entries) {
        if !spec.enabled {
            continue;
        }
        let (entry, at, lasts) = (entry.clone(), spec.at.unwrap_or_default(), spec.lasts);
        if at.is_zero() {
            entry.set(true);
        }
        schedules.push(tokio::spawn(async move {
            tokio::time::sleep(at).await;
            entry.set(true);
            if let Some(lasts) = lasts {
                tokio::time::sleep(lasts).await;
                entry.set(false);
            }
        }));
    }
    schedules
}

/// Why a scenario's faults could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceError {
    /// A fault sits between the backend and Redis or Postgres, and this target has no such
    /// place: the scenario is skipped, with this reason.
    NeedsServices(String),
    Failed(String),
}

/// One fault of a running scenario.
#[derive(Debug)]
struct Entry {
    name: Option<String>,
    proxy: FaultProxy,
    direction: Direction,
    toxic: Toxic,
    id: Mutex<Option<u64>>,
}

impl Entry {
    fn set(&self, enabled: bool) {
        let mut id = self.id.lock().unwrap_or_else(|e| e.into_inner());
        match (enabled, *id) {
            (true, None) => *id = Some(self.proxy.add(self.direction, self.toxic.clone())),
            (false, Some(current)) => {
                self.proxy.remove(current);
                *id = None;
            }
            _ => {}
        }
    }
}

/// A scenario's faults while it runs: proxies placed, schedules running. Dropping it removes
/// every toxic it added.
#[derive(Debug)]
pub struct ScenarioFaults {
    entries: Vec<Arc<Entry>>,
    schedules: Vec<tokio::task::JoinHandle<()>>,
    /// The proxy between the harness and the target, when a fault sits there; held so it
    /// lives as long as the scenario.
    _target_proxy: Option<FaultProxy>,
}

impl ScenarioFaults {
    /// Places the faults: a proxy in front of `target` if any fault sits there, the bundled
    /// backend's dependency proxies for the others (`dependencies[i]`: instance i's). Returns
    /// the target journeys must use.
    pub async fn start(
        specs: &[crate::scenario::FaultSpec],
        target: &crate::client::Target,
        dependencies: &[Option<&DependencyProxies>],
    ) -> Result<(Self, crate::client::Target), PlaceError> {
        use crate::scenario::FaultPlace;
        let (target_proxy, journeys_target) =
            if specs.iter().any(|f| f.between == FaultPlace::Target) {
                let (proxy, through) = in_front_of_target(specs, target).await?;
                (Some(proxy), through)
            } else {
                (None, target.clone())
            };
        let mut entries = Vec::new();
        for spec in specs {
            let instance = dependencies
                .get(spec.instance.unwrap_or(0) as usize)
                .copied()
                .flatten();
            let proxy = match spec.between {
                FaultPlace::Target => target_proxy.clone(),
                FaultPlace::Redis => instance.and_then(|d| d.redis.clone()),
                FaultPlace::Postgres => instance.and_then(|d| d.postgres.clone()),
            };
            let Some(proxy) = proxy else {
                let place = if spec.between == FaultPlace::Redis {
                    "redis"
                } else {
                    "postgres"
                };
                return Err(PlaceError::NeedsServices(format!(
                    "a fault `between: {place}` needs the bundled target on Postgres and Redis \
                     (--target bundled with APEX_DATABASE_URL and APEX_REDIS_URL set)"
                )));
            };
            entries.push(Arc::new(Entry {
                name: spec.name.clone(),
                proxy,
                direction: spec.direction,
                toxic: spec.toxic.toxic(),
                id: Mutex::new(None),
            }));
        }
        let schedules = schedule(specs, &entries);
        Ok((
            Self {
                entries,
                schedules,
                _target_proxy: target_proxy,
            },
            journeys_target,
        ))
    }

    /// A `fault` step: switches the named fault on or off.
    pub fn switch(&self, name: &str, enabled: bool) -> Result<(), String> {
        let matching: Vec<&Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| e.name.as_deref() == Some(name))
            .collect();
        if matching.is_empty() {
            return Err(format!(
                "no fault named `{name}` in this scenario's `faults`"
            ));
        }
        for entry in matching {
            entry.set(enabled);
        }
        Ok(())
    }
}

impl Drop for ScenarioFaults {
    fn drop(&mut self) {
        for schedule in &self.schedules {
            schedule.abort();
        }
        for entry in &self.entries {
            entry.set(false);
        }
    }
}

//! A small TCP proxy for dependency faults: added latency per chunk, or down (existing
//! connections cut, new ones dropped at once).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Faults {
    latency: Duration,
    down: bool,
    /// Cancelled to cut every open connection.
    cut: CancellationToken,
}

pub struct Proxy {
    pub addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.faults.lock().unwrap().cut.cancel();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Mutex<Faults>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = faults.lock().unwrap().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = CancellationToken::new();
        let (f, s) = (faults.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = s.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (down, cut) = {
                    let faults = f.lock().unwrap();
                    (faults.down, faults.cut.clone())
                };
                if down {
                    drop(client);
                    continue;
                }
                let f = f.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = cut.cancelled() => {}
                        () = pump(cr, sw, f.clone()) => {}
                        () = pump(sr, cw, f) => {}
                    }
                });
            }
        });
        Self { addr, faults, stop }
    }

    pub fn set_latency(&self, latency: Duration) {
        self.faults.lock().unwrap().latency = latency;
    }

    /// Down: cut every connection and refuse new ones. Up: accept again.
    pub fn set_down(&self, down: bool) {
        let mut faults = self.faults.lock().unwrap();
        faults.down = down;
        if down {
            faults.cut.cancel();
            faults.cut = CancellationToken::new();
        }
    }

    /// `scheme://host:port/rest` of `url` with host and port replaced by this proxy's.
    pub fn rewrite(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

/// The `host:port` a service URL points at.
pub fn upstream_of(url: &str) -> SocketAddr {
    let (scheme, rest) = url.split_once("://").unwrap();
    let default_port = if scheme.starts_with("redis") {
        6379
    } else {
        5432
    };
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    host_port
        .replace("localhost", "127.0.0.1")
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap()
}

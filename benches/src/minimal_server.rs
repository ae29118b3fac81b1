//! `minimal-server`: the golden path with no work behind it ([`apex_benches::minimal`]), the
//! common target for comparing clients by their own cost per journey.

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let listen: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("--listen ADDR");
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("address"));
    apex_benches::minimal::serve(listener).await.expect("serve");
}

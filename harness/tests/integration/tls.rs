//! `https://` / `wss://` targets: the bundled backend behind a TLS-terminating proxy with a
//! test CA (`fixtures/tls/`). Without `--ca-cert` the certificate is refused.

use std::path::PathBuf;
use std::sync::Arc;

use apex_harness::exit_codes;
use tokio_rustls::rustls;

use crate::{run_cli, start_backend};

fn tls_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls")
}

/// Terminates TLS on a free port and forwards the plain bytes to `upstream`.
async fn tls_proxy(upstream: String) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs = rustls_pemfile::certs(
        &mut std::fs::read(tls_dir().join("server.pem"))
            .unwrap()
            .as_slice(),
    )
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    let key = rustls_pemfile::private_key(
        &mut std::fs::read(tls_dir().join("server.key"))
            .unwrap()
            .as_slice(),
    )
    .unwrap()
    .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_golden_path_runs_over_tls_with_the_right_ca_only() {
    let (target, _stop) = start_backend().await;
    let url = tls_proxy(target.authority.clone()).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let golden = root.join("scenarios/golden_path.yaml");
    let fixtures = root.join("fixtures");
    let ca = tls_dir().join("ca.pem");
    let args = [
        golden.to_str().unwrap(),
        "--fixtures",
        fixtures.to_str().unwrap(),
        "--target",
        url.as_str(),
    ];
    // `execute` builds its own runtime: run it off this one.
    let trusted = {
        let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        args.extend(["--ca-cert".to_owned(), ca.to_str().unwrap().to_owned()]);
        tokio::task::spawn_blocking(move || {
            run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap()
    };
    assert_eq!(trusted.0, exit_codes::PASS, "{}\n{}", trusted.1, trusted.2);
    let untrusted = {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap()
    };
    assert_ne!(
        untrusted.0,
        exit_codes::PASS,
        "an unknown CA must be refused: {}",
        untrusted.1
    );
}

/// Faults in front of an `https://` target: the proxy sits at the TCP level (the HTTP client
/// tunnels through it with CONNECT, WebSocket connections go straight to it) and the TLS
/// server name stays the target's. Latency passes through; a down proxy fails the journey;
/// a toxic that must read the traffic is refused.
#[tokio::test(flavor = "multi_thread")]
async fn faults_work_in_front_of_an_https_target() {
    let (target, _stop) = start_backend().await;
    let url = tls_proxy(target.authority.clone()).await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::temp_dir().join(format!("apex-tls-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let golden = std::fs::read_to_string(root.join("scenarios/golden_path.yaml")).unwrap();
    let run_with = |name: &str, faults: &str| {
        let file = dir.join(format!("{name}.yaml"));
        let source = golden.replacen("steps:", &format!("faults:\n{faults}\nsteps:"), 1);
        std::fs::write(&file, source).unwrap();
        let args: Vec<String> = [
            file.to_str().unwrap(),
            "--fixtures",
            root.join("fixtures").to_str().unwrap(),
            "--target",
            url.as_str(),
            "--ca-cert",
            tls_dir().join("ca.pem").to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        move || run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let slow = tokio::task::spawn_blocking(run_with(
        "slow",
        "  - { toxic: { latency: { delay: 20ms } } }",
    ))
    .await
    .unwrap();
    assert_eq!(slow.0, exit_codes::PASS, "{}\n{}", slow.1, slow.2);
    let down = tokio::task::spawn_blocking(run_with("down", "  - { toxic: down }"))
        .await
        .unwrap();
    assert_eq!(down.0, exit_codes::INFRASTRUCTURE, "{}\n{}", down.1, down.2);
    let frames = tokio::task::spawn_blocking(run_with(
        "frames",
        "  - { toxic: { close_after_frames: { frames: 3 } } }",
    ))
    .await
    .unwrap();
    assert_eq!(frames.0, exit_codes::INFRASTRUCTURE, "{}", frames.1);
    assert!(frames.1.contains("encrypted"), "{}", frames.1);
    let _ = std::fs::remove_dir_all(&dir);
}

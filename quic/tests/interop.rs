//! Interop over real loopback UDP: our sans-IO endpoint against the `quinn` crate (tokio), the
//! reference peer, in both roles. The quinn side's TLS is configured here with plain rustls,
//! independently of netron-quic's config code.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;

use common::*;
use netron_quic::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn quinn_server_config(id: Identity) -> quinn::ServerConfig {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(id.chain, id.key)
        .unwrap();
    tls.alpn_protocols = vec![b"netron/1".to_vec()];
    let q = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    quinn::ServerConfig::with_crypto(Arc::new(q))
}

fn quinn_client_config(ca: &Ca) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"netron/1".to_vec()];
    let q = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(q))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn our_client_against_a_quinn_echo_server() {
    let ca = Ca::new("ca");
    let rt = runtime();
    let server = {
        let _guard = rt.enter();
        quinn::Endpoint::server(
            quinn_server_config(ca.server()),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap()
    };
    let server_addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let quinn_thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let serve = async {
                while let Some(incoming) = server.accept().await {
                    let conn = incoming.await.unwrap();
                    assert_eq!(
                        conn.handshake_data()
                            .unwrap()
                            .downcast::<quinn::crypto::rustls::HandshakeData>()
                            .unwrap()
                            .protocol
                            .as_deref(),
                        Some(&b"netron/1"[..])
                    );
                    tokio::spawn(async move {
                        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                            tokio::spawn(async move {
                                let data = recv.read_to_end(usize::MAX).await.unwrap();
                                send.write_all(&data).await.unwrap();
                                send.finish().unwrap();
                                let _ = send.stopped().await;
                            });
                        }
                    });
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stop_rx => {}
            }
        });
    });

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ep = QuicEndpoint::new(
        None,
        Some(&ClientConfig::new(Trust::Ca(vec![ca.cert.clone()]))),
    )
    .unwrap();
    let conn = ep
        .connect(std::time::Instant::now(), server_addr, "localhost")
        .unwrap();
    let mut payloads = vec![payload(1, 1 << 20)];
    payloads.extend((0..20).map(|i| payload(i + 2, 100 + i as usize)));
    let mut caller = Caller::new(conn, payloads);
    drive_udp(&mut ep, &sock, |ep, evs| {
        caller.apply(ep, evs);
        caller.all_done()
    });
    for call in &caller.calls {
        assert!(call.got == call.data, "echo from quinn differs");
    }
    ep.close(std::time::Instant::now(), conn, 0, b"done")
        .unwrap();
    drive_udp(&mut ep, &sock, |_, _| true);
    stop_tx.send(()).unwrap();
    quinn_thread.join().unwrap();
}

#[test]
fn a_quinn_client_against_our_echo_server() {
    let ca = Ca::new("ca");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_addr = sock.local_addr().unwrap();
    let client_cfg = quinn_client_config(&ca);
    let quinn_thread = std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            client.set_default_client_config(client_cfg);
            let conn = client
                .connect(server_addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..20u64 {
                let conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    let data = payload(i, if i == 0 { 1 << 20 } else { 50 + i as usize });
                    let (mut send, mut recv) = conn.open_bi().await.unwrap();
                    send.write_all(&data).await.unwrap();
                    send.finish().unwrap();
                    let got = recv.read_to_end(usize::MAX).await.unwrap();
                    assert!(got == data, "echo from netron-quic differs on stream {i}");
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            conn.close(7u32.into(), b"bye");
            client.wait_idle().await;
        });
    });
    let mut ep = QuicEndpoint::new(Some(&ServerConfig::new(ca.server())), None).unwrap();
    let mut echo = Echo::default();
    drive_udp(&mut ep, &sock, |ep, evs| {
        echo.apply(ep, evs);
        closed(&echo.log).is_some()
    });
    quinn_thread.join().unwrap();
    assert_eq!(
        closed(&echo.log),
        Some(CloseReason::Application {
            code: 7,
            reason: "bye".into()
        })
    );
    assert!(connected(&echo.log).is_some());
}

//! Interop at the engine level (issue 21): Netron over `quic://` against peers written on the
//! `quinn` crate (tokio), the QUIC reference implementation, that speak the Netron protocol
//! themselves from docs/protocol.md §27 with netron-codec's encoders and decoders: our engine
//! client calls a quinn server, and a quinn client calls our engine server. The quinn side's
//! TLS is configured here with plain rustls, independently of netron-quic's config code.

use std::sync::Arc;
use std::time::Duration;

use netron_codec::handshake::{
    ClientConfig as HelloConfig, ClientHandshake, ClientProgress, ServerConfig as WelcomeConfig,
    ServerHandshake, ServerProgress,
};
use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder};
use netron_codec::{BatchEncoder, FrameIter, FrameKind, Limits};
use netron_engine::Engine;
use netron_engine::quic::{
    CertificateDer, ClientConfig, Identity, PrivateKeyDer, ServerConfig, Trust,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const DL: Option<Duration> = Some(Duration::from_secs(10));

/// A CA and a server leaf for 127.0.0.1 signed by it.
fn certificates() -> (CertificateDer<'static>, Identity) {
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "quic-interop CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let identity = Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    };
    (ca.der().clone(), identity)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A Request frame `id` for `service`/`method` with `payload`, headers with no dynamic table
/// (the table size on quic is 0, §27.4).
fn request(id: u32, service: &[u8], method: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = BatchEncoder::new(Limits::default());
    let mut enc = HeaderEncoder::new(0);
    b.request(id, DL)
        .unwrap()
        .headers(
            &mut enc,
            &[Header::service(service), Header::method(method)],
        )
        .unwrap()
        .payload(payload)
        .finish()
        .unwrap();
    b.as_slice().to_vec()
}

/// The one frame of `bytes`: kind, id, header block, payload.
fn one_frame(bytes: &[u8]) -> (FrameKind, u32, Vec<u8>, Vec<u8>) {
    let limits = Limits::default();
    let mut frames = FrameIter::new(bytes, &limits);
    let f = frames.next().expect("a frame").expect("a valid frame");
    assert!(frames.next().is_none(), "one frame on a call's stream");
    (
        f.kind(),
        f.id(),
        f.header_block().to_vec(),
        f.payload().to_vec(),
    )
}

/// An engine server on 127.0.0.1 with `calc@1.2.0`, its UDP address, and a quinn client
/// configuration (plain rustls, ALPN `netron/1`) that trusts its CA.
fn calc_server_and_quinn_client() -> (Engine, std::net::SocketAddr, quinn::ClientConfig) {
    let (ca, identity) = certificates();
    let server = Engine::builder()
        .cores(1)
        .quic_server(ServerConfig::new(identity))
        .service(netron_tests::calc())
        .listen("quic://127.0.0.1:0")
        .build()
        .unwrap();
    let addr: std::net::SocketAddr = server.endpoints()[0]
        .to_string()
        .strip_prefix("quic://")
        .unwrap()
        .parse()
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"netron/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    (server, addr, quinn::ClientConfig::new(Arc::new(crypto)))
}

/// The Netron handshake from a quinn client (§27.3): the control stream with the preface
/// and a Hello offering header_table_size 0, until the Welcome. Returns the settings and the
/// control stream, which must stay open (its end is the client's end of input, §27.2).
async fn netron_handshake(
    conn: &quinn::Connection,
) -> (
    netron_codec::handshake::Settings,
    (quinn::SendStream, quinn::RecvStream),
) {
    let (mut ctl_tx, mut ctl_rx) = conn.open_bi().await.unwrap();
    let mut hs = ClientHandshake::new(HelloConfig::default().with_header_table_size(0));
    let mut hello = Vec::new();
    hs.start(&mut hello).unwrap();
    ctl_tx.write_all(&hello).await.unwrap();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = ctl_rx.read(&mut chunk).await.unwrap().expect("the Welcome");
        got.extend_from_slice(&chunk[..n]);
        if let ClientProgress::Done { settings, .. } = hs.handle(&got).unwrap() {
            return (settings, (ctl_tx, ctl_rx));
        }
    }
}

/// Our engine client calls a server written on quinn: the client opens the control stream
/// with the preface and Hello, the quinn server answers with a Welcome from netron-codec's
/// server handshake, then serves one call per bidirectional stream (Request, FIN → Response,
/// FIN; §27.2 rule 3) by decoding the header block itself.
#[test]
fn our_engine_client_calls_a_quinn_server_speaking_netron() {
    let (ca, identity) = certificates();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .unwrap();
    tls.alpn_protocols = vec![b"netron/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let rt = runtime();
    let endpoint = rt.block_on(async {
        quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse().unwrap()).unwrap()
    });
    let port = endpoint.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<(Vec<u8>, Vec<u8>)>();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            let conn = endpoint.accept().await.unwrap().await.unwrap();
            // The control stream: preface + Hello in, Welcome out (kept open).
            let (mut ctl_tx, mut ctl_rx) = conn.accept_bi().await.unwrap();
            let mut welcome_cfg = WelcomeConfig::default();
            welcome_cfg.header_table_size = 0;
            let mut hs = ServerHandshake::new(welcome_cfg);
            let mut got = Vec::new();
            let offer = loop {
                let mut chunk = [0u8; 4096];
                let n = ctl_rx.read(&mut chunk).await.unwrap().expect("the Hello");
                got.extend_from_slice(&chunk[..n]);
                match hs.handle(&got).unwrap() {
                    ServerProgress::NeedMore { .. } => continue,
                    ServerProgress::Offer { offer, .. } => break offer,
                }
            };
            let mut welcome = Vec::new();
            hs.try_accept(&offer, &mut welcome).unwrap();
            ctl_tx.write_all(&welcome).await.unwrap();
            // Two calls, each on its own stream.
            for _ in 0..2 {
                let (mut tx, mut rx) = conn.accept_bi().await.unwrap();
                let bytes = rx.read_to_end(1 << 20).await.unwrap();
                let (kind, id, block, payload) = one_frame(&bytes);
                assert_eq!(kind, FrameKind::Request);
                assert_eq!(id % 2, 1, "the initiator's calls have odd ids");
                let mut dec = HeaderDecoder::new(0, 64 << 10);
                let (mut service, mut method) = (Vec::new(), Vec::new());
                dec.decode(&block, |name, value| match name {
                    b":service" => service = value.to_vec(),
                    b":method" => method = value.to_vec(),
                    _ => {}
                })
                .unwrap();
                seen_tx.send((service, method.clone())).unwrap();
                let sum = payload.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                let mut b = BatchEncoder::new(Limits::default());
                b.response(id).unwrap().payload(&[sum]).finish().unwrap();
                tx.write_all(b.as_slice()).await.unwrap();
                tx.finish().unwrap();
                let _ = tx.stopped().await;
            }
            conn.closed().await;
        })
    });
    let client = Engine::builder()
        .cores(1)
        .quic_client(ClientConfig::new(Trust::Ca(vec![ca])))
        .build()
        .unwrap();
    let ch = client
        .client()
        .connect(&format!("quic://127.0.0.1:{port}"))
        .unwrap();
    assert_eq!(
        ch.call("calc@1.2.0", "add", vec![1, 2, 3], DL).unwrap(),
        [6]
    );
    assert_eq!(
        ch.call("calc@1.2.0", "add", vec![200, 100], DL).unwrap(),
        [44]
    );
    for _ in 0..2 {
        let (service, method) = seen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (&service[..], &method[..]),
            (&b"calc@1.2.0"[..], &b"add"[..])
        );
    }
    client.shutdown(Duration::from_secs(1));
    server.join().unwrap();
}

/// A client written on quinn calls our engine server: it opens the control stream with the
/// preface and Hello from netron-codec's client handshake, reads the Welcome, then makes a
/// call on its own bidirectional stream (Request, FIN) and reads the Response to the FIN.
#[test]
fn a_quinn_client_speaking_netron_calls_our_engine_server() {
    let (server, addr, client_cfg) = calc_server_and_quinn_client();
    let rt = runtime();
    rt.block_on(async {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client_cfg);
        let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
        let (settings, _control) = netron_handshake(&conn).await;
        assert_eq!(
            settings.header_table_size, 0,
            "no dynamic table on quic (§27.4)"
        );
        for (id, payload, want) in [(1u32, vec![1u8, 2, 3], 6u8), (3, vec![250, 10], 4)] {
            let (mut tx, mut rx) = conn.open_bi().await.unwrap();
            tx.write_all(&request(id, b"calc@1.2.0", b"add", &payload))
                .await
                .unwrap();
            tx.finish().unwrap();
            let bytes = rx.read_to_end(1 << 20).await.unwrap();
            let (kind, rid, _, reply) = one_frame(&bytes);
            assert_eq!(
                (kind, rid, &reply[..]),
                (FrameKind::Response, id, &[want][..])
            );
        }
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
    });
    let st = server.total_stats();
    assert_eq!(st.calls_ok(), 2, "{st:?}");
    server.shutdown(Duration::from_secs(1));
}

/// A quinn client rebinds its endpoint to a new UDP port mid-call (quinn's
/// `Endpoint::rebind`, as a client moving between networks does): our server routes the
/// datagrams from the new address to the connection (connection migration, RFC 9000 §9;
/// docs/quic.md "Connection migration"), the call in flight completes and the next one too.
/// Before, the listener answered the new address with a stateless reset, which ended the
/// connection.
#[test]
fn a_quinn_client_that_rebinds_its_port_mid_call_keeps_its_calls() {
    let (server, addr, client_cfg) = calc_server_and_quinn_client();
    let rt = runtime();
    let (old_port, new_port) = rt.block_on(async {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(client_cfg);
        let old_port = endpoint.local_addr().unwrap().port();
        let conn = endpoint.connect(addr, "127.0.0.1").unwrap().await.unwrap();
        let (_settings, _control) = netron_handshake(&conn).await;
        // A call the server answers after 200 ms; the client moves meanwhile.
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        tx.write_all(&request(1, b"calc@1.2.0", b"sleep", &[200]))
            .await
            .unwrap();
        tx.finish().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        endpoint
            .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
        let new_port = endpoint.local_addr().unwrap().port();
        let bytes = rx
            .read_to_end(1 << 20)
            .await
            .expect("the reply after the move");
        let (kind, id, _, reply) = one_frame(&bytes);
        assert_eq!(
            (kind, id, &reply[..]),
            (FrameKind::Response, 1, &b"slept"[..])
        );
        // And a call after it.
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        tx.write_all(&request(3, b"calc@1.2.0", b"add", &[20, 22]))
            .await
            .unwrap();
        tx.finish().unwrap();
        let bytes = rx.read_to_end(1 << 20).await.unwrap();
        let (kind, id, _, reply) = one_frame(&bytes);
        assert_eq!(
            (kind, id, &reply[..]),
            (FrameKind::Response, 3, &[42u8][..])
        );
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        (old_port, new_port)
    });
    assert_ne!(old_port, new_port, "the client moved to another port");
    let st = server.total_stats();
    assert_eq!(st.calls_ok(), 2, "{st:?}");
    assert!(
        st.driver().udp_datagrams_routed >= 1,
        "the new address's first datagrams came through the listener: {:?}",
        st.driver()
    );
    assert!(st.errors().is_empty(), "{:?}", st.errors());
    server.shutdown(Duration::from_secs(1));
}

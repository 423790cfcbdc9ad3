//! `quic://` with mutual TLS: a server that requires a client certificate signed by its CA,
//! an interceptor that lets through only callers it knows, a handler that reads who is
//! calling, what a client without a certificate gets (`ConnectError::Tls`), and 0-RTT: a
//! client that connected before sends an idempotent call with its first packets.
//!
//! The certificates are made here with `rcgen`, as a test would; a deployment loads its own
//! (`netron_engine::quic::Identity` holds a DER chain and key).
//!
//! Run: `cargo run -p netron-engine --example quic`

use std::time::Duration;

use netron_engine::quic::{
    CertificateDer, ClientAuth, ClientConfig, Identity, PrivateKeyDer, ServerConfig, Trust,
};
use netron_engine::{
    Before, CallOptions, ConnectError, Engine, Interceptor, Service, Status, StatusCode,
};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority for the example: its certificate and what signs leaves.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Result<Ca, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "example CA");
        Ok(Ca {
            cert: params.self_signed(&key)?,
            key,
        })
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A leaf for `name` (a DNS name or an IP address), for a server or a client.
    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Result<Identity, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Identity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

/// Lets a call through only if the caller's certificate is one of `allowed` (DER of the
/// leaf). TLS already checked that a CA of the server signed it; this decides who may call.
struct AllowList {
    allowed: Vec<Vec<u8>>,
}

impl Interceptor for AllowList {
    fn before(&self, call: &mut Before<'_>) -> Result<(), Status> {
        match call.peer_certificates() {
            Some(c) if self.allowed.iter().any(|a| a[..] == c.leaf()[..]) => Ok(()),
            _ => Err(Status::new(
                StatusCode::PermissionDenied,
                "this client certificate may not call",
            )),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = Ca::new()?;
    let alice = ca.leaf("alice", ExtendedKeyUsagePurpose::ClientAuth)?;
    let mallory = ca.leaf("mallory", ExtendedKeyUsagePurpose::ClientAuth)?;

    // Server: TLS requires a certificate from our CA; the interceptor allows only alice.
    let mut tls = ServerConfig::new(ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)?);
    tls.client_auth = ClientAuth::Required(vec![ca.der()]);
    let greet = Service::new("greet", "1.0.0")?
        .interceptor(AllowList {
            allowed: vec![alice.chain[0].to_vec()],
        })
        .unary("hello", |req, reply| {
            let certs = req.peer_certificates().map_or(0, |c| c.leaf().len());
            reply.write(format!("hello, caller with a {certs}-byte certificate").as_bytes());
            Ok(())
        })
        // Safe to run twice: may be served from 0-RTT data (which an attacker can replay).
        .idempotent("hello");
    let server = Engine::builder()
        .cores(1)
        .quic_server(tls)
        .service(greet)
        .listen("quic://127.0.0.1:0")
        .build()?;
    let endpoint = server.endpoints()[0].to_string();
    println!("server listening on {endpoint}");

    let client = |identity: Option<Identity>| {
        let mut tls = ClientConfig::new(Trust::Ca(vec![ca.der()]));
        tls.identity = identity;
        Engine::builder().cores(1).quic_client(tls).build()
    };
    let dl = Some(Duration::from_secs(5));

    // Alice: TLS accepts her certificate and so does the interceptor.
    let a = client(Some(alice.clone()))?;
    let reply = a
        .client()
        .connect(&endpoint)?
        .call("greet@1.0.0", "hello", vec![], dl)?;
    println!("alice: {}", String::from_utf8_lossy(&reply));

    // Mallory: TLS accepts the certificate (same CA); the interceptor refuses the call.
    let m = client(Some(mallory))?;
    let err = m
        .client()
        .connect(&endpoint)?
        .call("greet@1.0.0", "hello", vec![], dl)
        .expect_err("mallory is not on the list");
    println!("mallory: {err}");
    assert_eq!(err.code(), StatusCode::PermissionDenied);

    // No certificate: the TLS handshake fails, and the error says which setting to check.
    let anonymous = client(None)?;
    match anonymous
        .client()
        .connect_timeout(&endpoint, Duration::from_secs(5))
    {
        Err(e @ ConnectError::Tls { .. }) => println!("no certificate: {e}"),
        other => return Err(format!("expected a TLS failure, got {other:?}").into()),
    }

    // 0-RTT (docs/quic.md "0-RTT"): the first connect is a full handshake and leaves a
    // session ticket; the second resumes it, `connect` returns before the handshake, and the
    // call marked idempotent goes with the first packets (the server serves it from 0-RTT
    // because the method is declared idempotent too).
    let mut tls = ClientConfig::new(Trust::Ca(vec![ca.der()]));
    tls.identity = Some(alice);
    tls.zero_rtt = true;
    let z = Engine::builder().cores(1).quic_client(tls).build()?;
    let hello = CallOptions::new()
        .idempotent()
        .deadline(Duration::from_secs(5));
    for round in ["full handshake", "resumed, 0-RTT"] {
        let reply = z
            .client()
            .connect(&endpoint)?
            .call_with("greet@1.0.0", "hello", vec![], &hello)
            .into_result()?;
        println!("alice, {round}: {}", String::from_utf8_lossy(&reply));
    }
    // On loopback the handshake often completes before the call leaves the client (a
    // round trip is tens of microseconds): the call then travels as 1-RTT data; over a WAN
    // it is in the first flight.
    println!(
        "0-RTT accepted by the server: {} time(s); calls it served from 0-RTT: {}",
        z.total_stats().zero_rtt_accepted(),
        server.total_stats().zero_rtt_calls_in()
    );
    Ok(())
}

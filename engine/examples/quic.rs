//! `quic://` with mutual TLS: a server that requires a client certificate signed by its CA,
//! an interceptor that lets through only callers it knows, a handler that reads who is
//! calling, and what a client without a certificate gets (`ConnectError::Tls`).
//!
//! The certificates are made here with `rcgen`, as a test would; a deployment loads its own
//! (`netron_engine::quic::Identity` holds a DER chain and key).
//!
//! Run: `cargo run -p netron-engine --example quic`

use std::time::Duration;

use netron_engine::quic::{
    CertificateDer, ClientAuth, ClientConfig, Identity, PrivateKeyDer, ServerConfig, Trust,
};
use netron_engine::{Before, ConnectError, Engine, Interceptor, Service, Status, StatusCode};
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
        });
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
    let a = client(Some(alice))?;
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
    Ok(())
}

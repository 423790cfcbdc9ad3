//! Who is calling over TLS: the peer's verified certificate chain on a `quic://` connection
//! ([`PeerCertificates`]), for interceptors and handlers to decide what the caller may do.
//! (`shm://` gives the peer process's credentials instead: [`crate::shm::PeerCred`].)

use std::sync::Arc;

use netron_quic::CertificateDer;

/// The peer's certificate chain on a `quic://` connection, as TLS verified it during the
/// handshake: DER, leaf first. A server sees the client's chain when it asks for one
/// (`ClientAuth::Required` / `Optional`, mutual TLS), a client the server's chain.
///
/// Read it with [`crate::Request::peer_certificates`],
/// [`crate::AsyncRequest::peer_certificates`], [`crate::StreamRequest::peer_certificates`] or
/// [`crate::Before::peer_certificates`]. Parsing the subject or SAN names is left to an X.509
/// crate of the application's choice (`x509-parser`, `rustls-webpki`...). Cloning is a
/// reference-count increment; the chain is stored once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates(Arc<[CertificateDer<'static>]>);

impl PeerCertificates {
    /// The chain `certs` (leaf first); `None` if it is empty.
    pub(crate) fn new(certs: Vec<CertificateDer<'static>>) -> Option<Self> {
        (!certs.is_empty()).then(|| Self(certs.into()))
    }

    /// The whole chain as the peer sent it, leaf first (DER).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.0
    }

    /// The peer's own certificate (the chain's first), DER.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.0[0]
    }
}

//! Server and client configuration: rustls (TLS 1.3, ring provider, ALPN `netron/1`) and the
//! QUIC transport knobs, with the defaults of docs/quic.md.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{IdleTimeout, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConfigError;

/// The ALPN protocol id every Netron QUIC connection negotiates (docs/protocol.md §27.1).
pub const ALPN: &[u8] = netron_codec::handshake::ALPN;

/// A certificate chain (leaf first, DER) and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1, DER).
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// An identity from PEM text: `chain_pem` holds the certificates (`-----BEGIN
    /// CERTIFICATE-----` blocks, leaf first), `key_pem` the leaf's private key (PKCS#8,
    /// PKCS#1 or SEC1). Read files with `std::fs::read` first. Parsed with
    /// `rustls-pki-types`' PEM reader; whether the key matches the leaf is checked when a
    /// configuration is built.
    ///
    /// # Errors
    /// [`ConfigError::Setting`] naming `Identity::from_pem` and the part at fault: PEM that
    /// does not parse, no certificate in `chain_pem`, no private key in `key_pem`.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Identity, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        const SETTING: &str = "Identity::from_pem";
        let chain = certificates_from_pem(chain_pem, SETTING, "the certificate chain's PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ConfigError::Setting {
            setting: SETTING,
            why: format!("the private key's PEM: {e}"),
        })?;
        Ok(Identity { chain, key })
    }
}

/// The certificates of `pem` (one or more `CERTIFICATE` blocks), for `setting`; `what` names
/// the PEM in errors.
fn certificates_from_pem(
    pem: &[u8],
    setting: &'static str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::Setting {
            setting,
            why: format!("{what}: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::Setting {
            setting,
            why: format!("no CERTIFICATE block in {what}"),
        });
    }
    Ok(certs)
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Whom a client trusts for the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The Mozilla root set (`webpki-roots`): public servers.
    WebPki,
    /// Only these CA certificates (DER): private deployments and tests.
    Ca(Vec<CertificateDer<'static>>),
}

impl Trust {
    /// Only the CA certificates in `pem` (`-----BEGIN CERTIFICATE-----` blocks; read a file
    /// with `std::fs::read` first): [`Trust::Ca`].
    ///
    /// # Errors
    /// [`ConfigError::Setting`] naming `Trust::ca_from_pem`: PEM that does not parse, or no
    /// certificate in it.
    pub fn ca_from_pem(pem: &[u8]) -> Result<Trust, ConfigError> {
        certificates_from_pem(pem, "Trust::ca_from_pem", "the CA certificates' PEM").map(Trust::Ca)
    }
}

/// Whether a server asks clients for a certificate (mutual TLS).
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// No client certificate is requested (the default).
    #[default]
    None,
    /// A client certificate signed by one of these CAs is required; a client without one, or
    /// with one from another CA, fails the handshake.
    Required(Vec<CertificateDer<'static>>),
    /// A client certificate is verified against these CAs if sent; clients without one are
    /// accepted (and have no identity).
    Optional(Vec<CertificateDer<'static>>),
}

/// When a server answers a new client with a Retry (address validation, RFC 9000 §8.1) before
/// spending a handshake on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Every new client address is validated first: one extra round trip per connection, and
    /// a spoofed source address costs the server one small Retry packet only.
    Always,
    /// Validate only while `pending` or more handshakes are in progress (the default, with
    /// `pending` = 64): cheap when calm, protected under an Initial flood. In the engine the
    /// count is the whole listener's (docs/quic.md, "Address validation").
    UnderLoad {
        /// Handshakes in progress from which new clients get a Retry.
        pending: usize,
    },
    /// Never send Retry (anti-amplification, 3× the received bytes, still applies).
    Never,
}

/// QUIC transport knobs shared by servers and clients. Defaults: docs/quic.md.
#[derive(Debug, Clone)]
pub struct QuicSettings {
    /// A connection with no packet received for this long is closed (`TimedOut`). Default 30 s;
    /// at most 2^62 − 1 ms.
    pub idle_timeout: Duration,
    /// Bidirectional streams the peer may have open at once (calls + Netron streams + the
    /// control stream). Default 101 (100 concurrent calls + the control stream, §27.2 rule 6).
    /// The Netron engine replaces it with its `max_concurrent_calls` + 1 (§27.2 rule 6), so
    /// there it is set through the engine's handshake settings, not here.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once (the header encoder and decoder
    /// streams). Default 3 (those two and one unknown stream being abandoned).
    pub max_concurrent_uni_streams: u32,
    /// Bytes the peer may send on one stream before it is read. Default 1 MiB.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on all streams before they are read. Default 8 MiB.
    pub receive_window: u32,
    /// QUIC datagrams (RFC 9221, events only, §27.6) accepted. Default off.
    pub datagrams: bool,
    /// Send with UDP generic segmentation offload where the kernel offers it (Linux
    /// `UDP_SEGMENT`, 4.18+): up to 10 datagrams of one connection leave in one `sendmsg`,
    /// cut by the kernel (or the NIC), while bulk data goes out (the engine's link sends small
    /// datagrams one by one: docs/quic.md "UDP GSO and GRO"). Default on. Used by the I/O
    /// driver, not by the sans-IO endpoint; a kernel or NIC that refuses it (`EIO`/`EINVAL`)
    /// turns it off for that socket and the datagrams go one per call (quinn-udp's fallback).
    pub gso: bool,
    /// Receive with UDP generic receive offload where the kernel offers it (Linux `UDP_GRO`,
    /// 5.0+): datagrams of one flow arriving together come up in one `recvmsg` as one buffer
    /// with their segment size. The engine's link turns it on for bursts and off while
    /// datagrams come one at a time (a plain `recvfrom` is cheaper then). Default on; off
    /// keeps `UDP_GRO` off on the socket.
    pub gro: bool,
}

impl Default for QuicSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            max_concurrent_bidi_streams: 101,
            max_concurrent_uni_streams: 3,
            stream_receive_window: 1 << 20,
            receive_window: 8 << 20,
            datagrams: false,
            gso: true,
            gro: true,
        }
    }
}

impl QuicSettings {
    fn transport(&self) -> Result<TransportConfig, ConfigError> {
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|_| ConfigError::Setting {
            setting: "QuicSettings::idle_timeout",
            why: "exceeds QUIC's maximum of 2^62 - 1 ms".into(),
        })?;
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::Setting {
                setting: "QuicSettings::idle_timeout",
                why: "must be positive (0 would mean no idle timeout)".into(),
            });
        }
        if self.stream_receive_window == 0 || self.receive_window < self.stream_receive_window {
            return Err(ConfigError::Setting {
                setting: "QuicSettings::receive_window",
                why: format!(
                    "stream_receive_window {} must be > 0 and <= receive_window {}",
                    self.stream_receive_window, self.receive_window
                ),
            });
        }
        let mut t = TransportConfig::default();
        t.max_idle_timeout(Some(idle))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .datagram_receive_buffer_size(
                self.datagrams
                    .then_some(self.stream_receive_window as usize),
            );
        Ok(t)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(
    setting: &'static str,
    cas: &[CertificateDer<'static>],
) -> Result<Arc<RootCertStore>, ConfigError> {
    let mut store = RootCertStore::empty();
    for ca in cas {
        store.add(ca.clone()).map_err(|e| ConfigError::Setting {
            setting,
            why: format!("CA certificate rejected: {e}"),
        })?;
    }
    if store.is_empty() {
        return Err(ConfigError::Setting {
            setting,
            why: "no CA certificate given".into(),
        });
    }
    Ok(Arc::new(store))
}

/// Called with every connection ID a server endpoint issues (its length is
/// [`CID_LEN`]): the engine routes a migrated client's datagrams, which reach the listening
/// socket rather than the connection's, by the ID they carry (docs/quic.md "Connection
/// migration").
pub type CidHook = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The length of the connection IDs a server issues: 8 random bytes and a 4-byte keyed hash
/// of them ([`KeyedCids`]).
pub const CID_LEN: usize = 12;

/// A server's connection IDs: 8 random bytes, then the first 4 bytes of HMAC-SHA256 of them
/// under a key derived from the server's secret, so every endpoint of the server (one per
/// connection in the engine, and those of a restarted process) recognises the others' IDs
/// (quinn-proto drops a short-header packet whose ID fails `validate` before answering it
/// with a stateless reset). quinn-proto's `HashedConnectionIdGenerator` draws only a 3-byte
/// nonce: with one key for all of a server's connections its 2^24 IDs collide among a few
/// thousand live ones (fresh user R16 saw the first after 5,579), and the engine routes a
/// migrated client's datagrams by ID; 64 random bits do not collide in practice.
struct KeyedCids {
    key: Arc<ring::hmac::Key>,
    rng: ring::rand::SystemRandom,
    /// Mixed in should the system's random source ever fail (IDs stay distinct).
    counter: u64,
}

impl KeyedCids {
    fn new(key: Arc<ring::hmac::Key>) -> Self {
        Self {
            key,
            rng: ring::rand::SystemRandom::new(),
            counter: 0,
        }
    }

    fn tag(&self, nonce: &[u8]) -> [u8; 4] {
        let t = ring::hmac::sign(&self.key, nonce);
        let mut out = [0u8; 4];
        out.copy_from_slice(&t.as_ref()[..4]);
        out
    }
}

impl quinn_proto::ConnectionIdGenerator for KeyedCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        use ring::rand::SecureRandom;
        let mut id = [0u8; CID_LEN];
        if self.rng.fill(&mut id[..8]).is_err() {
            // No system randomness: a keyed hash of a per-generator counter and the clock
            // (unpredictable without the key, distinct per call).
            self.counter += 1;
            let mut seed = self.counter.to_le_bytes().to_vec();
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            seed.extend_from_slice(&t.as_nanos().to_le_bytes());
            let h = ring::hmac::sign(&self.key, &seed);
            id[..8].copy_from_slice(&h.as_ref()[8..16]);
        }
        let tag = self.tag(&id[..8]);
        id[8..].copy_from_slice(&tag);
        quinn_proto::ConnectionId::new(&id)
    }

    fn validate(&self, cid: &quinn_proto::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if cid.len() == CID_LEN && self.tag(&cid[..8]) == cid[8..] {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The server's generator, telling a hook of each ID it issues.
struct ObservedCids {
    inner: KeyedCids,
    hook: CidHook,
}

impl quinn_proto::ConnectionIdGenerator for ObservedCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let cid = self.inner.generate_cid();
        (self.hook)(&cid);
        cid
    }

    fn validate(&self, cid: &quinn_proto::ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        self.inner.validate(cid)
    }

    fn cid_len(&self) -> usize {
        self.inner.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.inner.cid_lifetime()
    }
}

/// A server's configuration: its certificate, client authentication, transport knobs and its
/// defences against hostile clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's certificate chain and key.
    pub identity: Identity,
    /// Mutual TLS. Default [`ClientAuth::None`].
    pub client_auth: ClientAuth,
    /// Transport knobs.
    pub settings: QuicSettings,
    /// Address validation. Default `UnderLoad { pending: 64 }`.
    pub retry: RetryPolicy,
    /// Handshakes in progress (accepted, not yet established) at most: with this many in
    /// progress, new clients are refused with CONNECTION_REFUSED (in the engine, counted
    /// across the whole listener). Default 1024.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress of clients that proved their address (with a Retry token) at
    /// most per client IP address; more from that address are refused with
    /// CONNECTION_REFUSED. Bounds what one real host can hold of `max_pending_handshakes`
    /// (unproven clients cannot be told apart by address: they are bounded by the Retry
    /// policy instead). In the engine, counted across the whole listener. Default 64.
    pub max_pending_handshakes_per_ip: usize,
    /// Bytes buffered for one not-yet-accepted connection (0-RTT and coalesced Initial data).
    /// Default 64 KiB.
    pub incoming_buffer_bytes: u64,
    /// Bytes buffered for all not-yet-accepted connections. Default 4 MiB.
    pub incoming_buffer_bytes_total: u64,
    /// The secret of this server's stateless resets (RFC 9000 §10.3: a server that lost a
    /// connection's state, e.g. after a restart, answers its packets with a reset the client
    /// recognises, instead of silence until the client's idle timeout). The same secret must
    /// survive restarts. Default `None`: derived from the identity's private key (SHA-256 of a
    /// label and the key), so a server restarted with the same key needs no setting; servers
    /// sharing one key behind one address share resets too. Give one explicitly to rotate it
    /// independently of the certificate.
    pub stateless_reset_key: Option<[u8; 32]>,
    /// Connection migration (RFC 9000 §9): a client whose address changes (a NAT rebinding,
    /// or a client moving to another port or network) keeps its connection; quinn-proto
    /// validates the new path (PATH_CHALLENGE) before sending more than 3x what it received
    /// there. In the engine the listener routes such a client's datagrams to its connection
    /// by connection ID (docs/quic.md "Connection migration"). Default on; off sends the
    /// `disable_active_migration` transport parameter and drops packets from a new address.
    pub migration: bool,
    /// Session resumption (RFC 8446 §2.2): after a handshake the server sends the client two
    /// TLS 1.3 session tickets, and a later handshake presenting one skips the certificate
    /// exchange. Tickets are stateful and single-use: the session lives in this server's
    /// cache ([`SESSION_CACHE_ENTRIES`] sessions, shared by every clone of this configuration
    /// and every connection of a listener; the oldest are forgotten) and is removed when a
    /// client uses it, so a ticket replayed by an attacker resumes nothing. A restarted
    /// process starts with an empty cache (its clients do a full handshake once). Default on.
    pub resumption: bool,
    /// 0-RTT (RFC 9001 §4.6): a client resuming a session may send requests in its first
    /// flight. The engine serves only calls that are marked idempotent on both sides (the
    /// call's `CallOptions::idempotent` and the method's `Service::idempotent`) before the
    /// handshake completes, and refuses the others with `Unavailable` (docs/protocol.md
    /// §27.3); nothing else (streams, subscriptions) is accepted in 0-RTT. Needs
    /// [`ServerConfig::resumption`]. Default on.
    pub zero_rtt: bool,
    /// The resumption cache, made in [`ServerConfig::new`] and shared by clones.
    sessions: ServerSessions,
}

/// Sessions a server's resumption cache ([`ServerConfig::resumption`]) and a client's
/// ([`ClientConfig::resumption`]) hold at most (rustls's in-memory caches; the least recently
/// used go first). About 200 bytes each on a server.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// A server's resumption cache, shared by the clones of its [`ServerConfig`].
#[derive(Clone)]
struct ServerSessions(Arc<rustls::server::ServerSessionMemoryCache>);

impl Default for ServerSessions {
    fn default() -> Self {
        Self(rustls::server::ServerSessionMemoryCache::new(
            SESSION_CACHE_ENTRIES,
        ))
    }
}

impl std::fmt::Debug for ServerSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSessions")
    }
}

/// A client's session tickets (per server name) and the rustls configuration that uses them,
/// shared by the clones of its [`ClientConfig`]. rustls resumes a ticket only with the very
/// configuration objects (certificate verifier, client certificate resolver) of the
/// connection that got it (`ClientSessionCommon::compatible_config`, which compares them by
/// pointer), so the rustls configuration is built once and rebuilt only when a setting it
/// depends on changed ([`TlsInputs`]).
#[derive(Clone)]
struct ClientSessions {
    store: Arc<rustls::client::ClientSessionMemoryCache>,
    built: Arc<std::sync::Mutex<Option<BuiltTls>>>,
    /// A value the application remembers per server name ([`ClientConfig::remember`]).
    remembered: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

/// A rustls client configuration and what it was built from.
type BuiltTls = (TlsInputs, Arc<rustls::ClientConfig>);

impl Default for ClientSessions {
    fn default() -> Self {
        Self {
            store: Arc::new(rustls::client::ClientSessionMemoryCache::new(
                SESSION_CACHE_ENTRIES,
            )),
            built: Arc::default(),
            remembered: Arc::default(),
        }
    }
}

/// What a client's rustls configuration is made of: trust anchors, identity (chain DER and
/// the key's SHA-256), resumption and 0-RTT.
#[derive(PartialEq, Eq)]
struct TlsInputs {
    trust: Option<Vec<Vec<u8>>>,
    identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    resumption: bool,
    early_data: bool,
}

impl TlsInputs {
    fn of(c: &ClientConfig) -> Self {
        let der = |v: &[CertificateDer<'static>]| v.iter().map(|c| c.to_vec()).collect();
        Self {
            trust: match &c.trust {
                Trust::WebPki => None,
                Trust::Ca(cas) => Some(der(cas)),
            },
            // The key by its SHA-256: no second copy of the secret stays in memory.
            identity: c.identity.as_ref().map(|id| {
                let digest = ring::digest::digest(&ring::digest::SHA256, id.key.secret_der());
                (der(&id.chain), digest.as_ref().to_vec())
            }),
            resumption: c.resumption,
            early_data: c.resumption && c.zero_rtt,
        }
    }
}

impl std::fmt::Debug for ClientSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSessions")
    }
}

/// SHA-256 of `label` then `secret`: a 32-byte key for one purpose from a server's secret.
fn derive(label: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(label);
    ctx.update(secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl ServerConfig {
    /// The endpoint settings every endpoint of this server shares, in this process and in
    /// a restarted one: the HMAC key of its stateless resets
    /// ([`ServerConfig::stateless_reset_key`], or derived from the identity's private key),
    /// and the key of its connection-id generator, so a restarted server recognises the ids
    /// it issued before (quinn drops a packet whose id it cannot validate, without a reset).
    pub(crate) fn endpoint_config(&self, issued: Option<CidHook>) -> quinn_proto::EndpointConfig {
        let secret = self.secret();
        let cid_key = Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &derive(b"netron-quic connection id key v2", &secret),
        ));
        let mut config = quinn_proto::EndpointConfig::default();
        config
            .reset_key(std::sync::Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &secret,
            )))
            .cid_generator(move || {
                let inner = KeyedCids::new(cid_key.clone());
                match &issued {
                    Some(hook) => Box::new(ObservedCids {
                        inner,
                        hook: hook.clone(),
                    })
                        as Box<dyn quinn_proto::ConnectionIdGenerator>,
                    None => Box::new(inner),
                }
            });
        config
    }

    /// The server's secret: [`ServerConfig::stateless_reset_key`], or derived from the
    /// identity's private key. Every key an endpoint of this server uses is derived from it.
    fn secret(&self) -> [u8; 32] {
        self.stateless_reset_key.unwrap_or_else(|| {
            derive(
                b"netron-quic stateless reset key v1",
                self.identity.key.secret_der(),
            )
        })
    }

    /// The key of this server's address-validation tokens (Retry, RFC 9000 §8.1.2): HKDF-SHA256
    /// (RFC 5869) extracted from a key derived from [`Self::secret`], as quinn-proto's own
    /// `ServerConfig::with_crypto` extracts it from random bytes. Shared by every endpoint of the
    /// server, so a Retry sent by a listener's gate endpoint is accepted by the connection's
    /// own endpoint (docs/quic.md, "Address validation").
    fn token_key(&self) -> ring::hkdf::Prk {
        let key = derive(b"netron-quic token key v1", &self.secret());
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&key)
    }

    /// A server with `identity` and the defaults above.
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            client_auth: ClientAuth::None,
            settings: QuicSettings::default(),
            retry: RetryPolicy::UnderLoad { pending: 64 },
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_ip: 64,
            incoming_buffer_bytes: 64 << 10,
            incoming_buffer_bytes_total: 4 << 20,
            stateless_reset_key: None,
            migration: true,
            resumption: true,
            zero_rtt: true,
            sessions: ServerSessions::default(),
        }
    }

    /// Builds the quinn-proto server configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting: a bad certificate or key, an empty or bad CA list,
    /// a transport knob out of range, a handshake budget of 0.
    pub fn build(&self) -> Result<Arc<quinn_proto::ServerConfig>, ConfigError> {
        for (setting, value) in [
            (
                "ServerConfig::max_pending_handshakes",
                self.max_pending_handshakes,
            ),
            (
                "ServerConfig::max_pending_handshakes_per_ip",
                self.max_pending_handshakes_per_ip,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Setting {
                    setting,
                    why: "0 would refuse every client; at least 1".to_owned(),
                });
            }
        }
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConfigError::Tls {
                setting: "TLS versions",
                source: e,
            })?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(cas) | ClientAuth::Optional(cas) => {
                let store = roots("ServerConfig::client_auth", cas)?;
                let mut v =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(store, provider());
                if matches!(self.client_auth, ClientAuth::Optional(_)) {
                    v = v.allow_unauthenticated();
                }
                let v = v.build().map_err(|e| ConfigError::Setting {
                    setting: "ServerConfig::client_auth",
                    why: format!("client verifier: {e}"),
                })?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut tls = builder
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(|e| ConfigError::Tls {
                setting: "ServerConfig::identity",
                source: e,
            })?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        if self.resumption {
            tls.session_storage = self.sessions.0.clone();
            // QUIC allows 0 or u32::MAX (RFC 9001 §4.6.1): quinn-proto's flow control bounds
            // the early data instead.
            if self.zero_rtt {
                tls.max_early_data_size = u32::MAX;
            }
        } else {
            tls.send_tls13_tickets = 0;
            tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        }
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| ConfigError::Setting {
            setting: "ServerConfig (TLS)",
            why: e.to_string(),
        })?;
        let mut cfg = quinn_proto::ServerConfig::new(Arc::new(crypto), Arc::new(self.token_key()));
        cfg.transport_config(Arc::new(self.settings.transport()?))
            .max_incoming(self.max_pending_handshakes)
            .incoming_buffer_size(self.incoming_buffer_bytes)
            .incoming_buffer_size_total(self.incoming_buffer_bytes_total)
            .migration(self.migration);
        Ok(Arc::new(cfg))
    }
}

/// A client's configuration: whom it trusts, its own certificate for mutual TLS, transport knobs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Trust anchors for the server certificate. Verification is always on.
    pub trust: Trust,
    /// The client's certificate for servers that require mutual TLS. Default none.
    pub identity: Option<Identity>,
    /// Transport knobs.
    pub settings: QuicSettings,
    /// Session resumption: tickets the servers send are kept per server name
    /// ([`SESSION_CACHE_ENTRIES`] at most, shared by every clone of this configuration, so
    /// every connect of an engine), and a later connect to that name presents one (a
    /// shorter handshake; the server's certificate was verified when the ticket was issued).
    /// Default on.
    pub resumption: bool,
    /// 0-RTT (RFC 9001 §4.6): a connect that resumes a session whose server allowed early
    /// data returns at once, before the handshake completes, and the connection's calls
    /// marked `CallOptions::idempotent` go out in the first flight; everything else waits for
    /// the handshake (docs/quic.md "0-RTT"). A server that refuses the early data makes the
    /// engine send it again after the handshake. The price: failures of the handshake (a
    /// server that changed its certificate, refuses the client, or is gone) show on the
    /// first calls instead of the connect. Needs [`ClientConfig::resumption`]. Default off.
    pub zero_rtt: bool,
    /// The tickets, made in [`ClientConfig::new`] and shared by clones.
    sessions: ClientSessions,
}

impl ClientConfig {
    /// A client trusting `trust`, without a certificate, with default settings.
    pub fn new(trust: Trust) -> Self {
        Self {
            trust,
            identity: None,
            settings: QuicSettings::default(),
            resumption: true,
            zero_rtt: false,
            sessions: ClientSessions::default(),
        }
    }

    /// Builds the quinn-proto client configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting: an empty or bad CA list, a bad client certificate or
    /// key, a transport knob out of range.
    pub fn build(&self) -> Result<quinn_proto::ClientConfig, ConfigError> {
        let tls = self.tls()?;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| ConfigError::Setting {
            setting: "ClientConfig (TLS)",
            why: e.to_string(),
        })?;
        let mut cfg = quinn_proto::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(self.settings.transport()?));
        Ok(cfg)
    }

    /// Remembers `value` for `server_name`, shared by this configuration's clones, for a
    /// later 0-RTT connect to read ([`ClientConfig::recall`]): what a client must assume
    /// of a server before the handshake tells it (RFC 9001 §4.6.2 asks the same of QUIC's
    /// transport parameters; the engine keeps the negotiated header table size, docs/quic.md
    /// "0-RTT"). At most [`SESSION_CACHE_ENTRIES`] names are kept (all are forgotten when a
    /// new one would exceed it).
    pub fn remember(&self, server_name: &str, value: u64) {
        let mut m = self
            .sessions
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= SESSION_CACHE_ENTRIES && !m.contains_key(server_name) {
            m.clear();
        }
        m.insert(server_name.to_owned(), value);
    }

    /// Forgets what was remembered for `server_name` ([`ClientConfig::remember`]): it proved
    /// wrong (a 0-RTT connect built on it failed), so the next connect learns it again.
    pub fn forget(&self, server_name: &str) {
        self.sessions
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(server_name);
    }

    /// The value last remembered for `server_name` ([`ClientConfig::remember`]).
    pub fn recall(&self, server_name: &str) -> Option<u64> {
        self.sessions
            .remembered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(server_name)
            .copied()
    }

    /// The rustls configuration: the one built before by this configuration or a clone if
    /// nothing it depends on changed since (so tickets stay usable), else a new one.
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
        let inputs = TlsInputs::of(self);
        let mut built = self
            .sessions
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((was, tls)) = built.as_ref() {
            if *was == inputs {
                return Ok(tls.clone());
            }
        }
        let store = match &self.trust {
            Trust::WebPki => Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
            Trust::Ca(cas) => roots("ClientConfig::trust", cas)?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ConfigError::Tls {
                setting: "TLS versions",
                source: e,
            })?
            .with_root_certificates(store);
        let mut tls = match &self.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| ConfigError::Tls {
                    setting: "ClientConfig::identity",
                    source: e,
                })?,
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.resumption = if self.resumption {
            rustls::client::Resumption::store(self.sessions.store.clone())
        } else {
            rustls::client::Resumption::disabled()
        };
        tls.enable_early_data = inputs.early_data;
        let tls = Arc::new(tls);
        *built = Some((inputs, tls.clone()));
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::ConnectionIdGenerator;

    /// PEM in, the same DER out; each kind of bad PEM named.
    #[test]
    fn identities_and_trust_read_from_pem() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());
        let id = Identity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(id.chain, vec![ck.cert.der().clone()]);
        assert_eq!(id.key.secret_der(), ck.key_pair.serialize_der());
        let Trust::Ca(cas) = Trust::ca_from_pem(cert.as_bytes()).unwrap() else {
            panic!("not a CA list");
        };
        assert_eq!(cas, vec![ck.cert.der().clone()]);
        let two = format!("{cert}{cert}");
        assert_eq!(
            Identity::from_pem(two.as_bytes(), key.as_bytes())
                .unwrap()
                .chain
                .len(),
            2
        );
        for (what, r) in [
            (
                "no CERTIFICATE",
                Identity::from_pem(b"", key.as_bytes()).map(|_| ()),
            ),
            (
                "private key",
                Identity::from_pem(cert.as_bytes(), cert.as_bytes()).map(|_| ()),
            ),
            (
                "no CERTIFICATE",
                Trust::ca_from_pem(key.as_bytes()).map(|_| ()),
            ),
            (
                "PEM",
                Trust::ca_from_pem(b"-----BEGIN CERTIFICATE-----\n!!\n").map(|_| ()),
            ),
        ] {
            let e = r.unwrap_err().to_string();
            assert!(e.contains(what) && e.contains("from_pem"), "{what}: {e}");
        }
    }

    /// What one clone remembers of a server the others recall; `forget` removes it for all;
    /// names are kept apart.
    #[test]
    fn clones_share_what_they_remember_until_it_is_forgotten() {
        let a = ClientConfig::new(Trust::Ca(Vec::new()));
        let b = a.clone();
        assert_eq!(b.recall("s"), None);
        a.remember("s", 1);
        a.remember("t", 0);
        assert_eq!((b.recall("s"), b.recall("t")), (Some(1), Some(0)));
        b.forget("s");
        assert_eq!((a.recall("s"), a.recall("t")), (None, Some(0)));
        let other = ClientConfig::new(Trust::Ca(Vec::new()));
        assert_eq!(
            other.recall("t"),
            None,
            "another configuration shares nothing"
        );
    }

    /// A configuration and its clones build one rustls configuration (rustls resumes a ticket
    /// only with the objects that got it), and a new one once a setting it is made of
    /// changed (a ticket got under another identity or trust must not be resumed).
    #[test]
    fn clones_share_their_rustls_configuration_until_a_tls_setting_changes() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = ck.cert.der().clone();
        let a = ClientConfig::new(Trust::Ca(vec![cert.clone()]));
        let first = a.tls().unwrap();
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&first, &b.tls().unwrap()));
        b.settings.idle_timeout = Duration::from_secs(5);
        assert!(Arc::ptr_eq(&first, &b.tls().unwrap()), "not a TLS setting");
        b.zero_rtt = true;
        let early = b.tls().unwrap();
        assert!(!Arc::ptr_eq(&first, &early));
        assert!(early.enable_early_data);
        b.identity = Some(Identity {
            chain: vec![cert],
            key: PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into()),
        });
        assert!(!Arc::ptr_eq(&early, &b.tls().unwrap()));
    }

    /// A server's connection IDs do not collide among many (the engine routes a migrated
    /// client's datagrams by them across all of a listener's connections; quinn-proto's
    /// hashed generator had its first duplicate after 5,579 with one key: fresh user R16's
    /// finding 2), every one validates under the server's key and none under another key.
    #[test]
    fn server_connection_ids_are_distinct_and_keyed() {
        let key = |k: u8| Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[k; 32]));
        let mut g = KeyedCids::new(key(1));
        let other = KeyedCids::new(key(2));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100_000 {
            let cid = g.generate_cid();
            assert_eq!(cid.len(), CID_LEN);
            assert!(g.validate(&cid).is_ok());
            assert!(other.validate(&cid).is_err());
            assert!(seen.insert(cid.to_vec()), "a duplicate connection ID");
        }
    }
}

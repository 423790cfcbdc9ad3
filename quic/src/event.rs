//! What an endpoint reports to its driver: connection and stream events, and why a
//! connection closed.

use quinn_proto::{ConnectionError, StreamId, TransportErrorCode};

use crate::endpoint::ConnId;

/// One thing that happened on an endpoint, from [`crate::QuicEndpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicEvent {
    /// A server accepted a new client (handshake in progress).
    Accepted {
        /// The new connection.
        conn: ConnId,
    },
    /// The handshake completed and ALPN `netron/1` was checked: streams may be opened.
    Connected {
        /// The connection.
        conn: ConnId,
    },
    /// The peer opened a stream; it is accepted and can be read (and written if bidirectional).
    StreamOpened {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// New bytes, a FIN or a reset can be read from the stream.
    Readable {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// A stream that was blocked by flow control can take bytes again.
    Writable {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// The peer acknowledged everything we sent on a finished stream.
    Finished {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
    },
    /// The peer sent STOP_SENDING: it will read no more (cancellation, §27.2 rule 4).
    Stopped {
        /// The connection.
        conn: ConnId,
        /// The stream.
        stream: StreamId,
        /// The peer's application error code.
        code: u64,
    },
    /// The peer raised its concurrent-stream limit: [`crate::QuicEndpoint::open_bi`] may succeed
    /// again.
    StreamsAvailable {
        /// The connection.
        conn: ConnId,
    },
    /// A QUIC datagram arrived ([`crate::QuicEndpoint::recv_datagram`]).
    Datagram {
        /// The connection.
        conn: ConnId,
    },
    /// The connection closed; its handle stays valid until [`QuicEvent::Drained`].
    Closed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// The connection's state is gone; the handle is now invalid.
    Drained {
        /// The connection.
        conn: ConnId,
    },
}

impl QuicEvent {
    /// The connection the event is about.
    pub fn conn(&self) -> ConnId {
        match *self {
            Self::Accepted { conn }
            | Self::Connected { conn }
            | Self::StreamOpened { conn, .. }
            | Self::Readable { conn, .. }
            | Self::Writable { conn, .. }
            | Self::Stopped { conn, .. }
            | Self::StreamsAvailable { conn }
            | Self::Finished { conn, .. }
            | Self::Datagram { conn, .. }
            | Self::Closed { conn, .. }
            | Self::Drained { conn } => conn,
        }
    }
}

/// Why a connection closed, blaming the right side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it ([`crate::QuicEndpoint::close`]).
    Local,
    /// The peer closed it with an application error code (a Netron status code, §27.1).
    Application {
        /// The code.
        code: u64,
        /// The peer's reason text (lossy UTF-8).
        reason: String,
    },
    /// The TLS handshake failed; the text names the cause (untrusted certificate, missing
    /// client certificate, wrong ALPN ...) and which side detected it.
    Tls(String),
    /// A QUIC protocol error, detected by us or reported by the peer.
    Transport(String),
    /// No packet from the peer within the idle timeout.
    TimedOut,
    /// The peer reset the connection (stateless reset: it lost its state).
    Reset,
    /// The peer supports no QUIC version we do.
    VersionMismatch,
    /// The peer's application closed the connection before the QUIC handshake completed.
    /// QUIC carries no application code or reason this early (RFC 9000 §10.2.3: the close
    /// becomes the transport error APPLICATION_ERROR); a Netron server does this when it
    /// refuses a connection (its connection limit, or shutting down).
    HandshakeRefused,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("closed locally"),
            Self::Application { code, reason } => {
                write!(f, "closed by peer with code {code}: {reason}")
            }
            Self::Tls(t) => write!(f, "TLS handshake failed: {t}"),
            Self::Transport(t) => write!(f, "QUIC transport error: {t}"),
            Self::TimedOut => {
                f.write_str("idle timeout: no packet from the peer (QuicSettings::idle_timeout)")
            }
            Self::Reset => f.write_str("reset by peer (stateless reset)"),
            Self::VersionMismatch => f.write_str("peer supports no common QUIC version"),
            Self::HandshakeRefused => f.write_str(
                "the peer's application closed the connection during the QUIC handshake \
                 (QUIC carries no reason this early, RFC 9000 §10.2.3; a Netron server does \
                 this at its connection limit, RuntimeConfig::max_connections, or when \
                 shutting down)",
            ),
        }
    }
}

/// TLS 1.3 alert names for the crypto error codes (0x100 + alert) quinn reports.
fn alert_name(alert: u8) -> &'static str {
    match alert {
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        48 => "unknown_ca",
        50 => "decode_error",
        51 => "decrypt_error",
        80 => "internal_error",
        116 => {
            "certificate_required (the server requires a client certificate, mutual TLS: set ClientConfig::identity)"
        }
        120 => "no_application_protocol (ALPN: the server speaks only netron/1)",
        _ => "other alert",
    }
}

fn crypto_alert(code: TransportErrorCode) -> Option<u8> {
    let c = u64::from(code);
    (0x100..0x200).contains(&c).then(|| (c - 0x100) as u8)
}

/// Adds what to check to rustls' certificate error text, for the side that detected it
/// (`client`: we checked the server's certificate; else a client's, mutual TLS).
fn hint(reason: &str, client: bool) -> &'static str {
    if reason.contains("UnknownIssuer") {
        if client {
            " (the server's certificate is not signed by a CA this client trusts: check ClientConfig::trust)"
        } else {
            " (the client's certificate is not signed by a CA this server accepts: check ServerConfig::client_auth)"
        }
    } else if reason.contains("NotValidForName") {
        " (the server certificate does not name the host given to connect)"
    } else if reason.contains("no certificates") || reason.contains("NoCertificatesPresented") {
        " (mutual TLS: this server requires a client certificate: set ClientConfig::identity)"
    } else if reason.contains("Expired") {
        " (certificate expired)"
    } else {
        ""
    }
}

/// What to check when the peer refused our certificate with `alert`.
fn refused_hint(alert: u8) -> &'static str {
    match alert {
        42 | 48 => {
            " (our certificate is not trusted by the peer: check ClientConfig::identity / the peer's CA)"
        }
        45 => {
            " (our certificate has expired: renew ClientConfig::identity or the server's Identity)"
        }
        43 => {
            " (our certificate's key usage does not fit: a client certificate needs the clientAuth extended key usage, a server's serverAuth)"
        }
        _ => "",
    }
}

impl From<&ConnectionError> for CloseReason {
    /// As seen by a client ([`CloseReason::of`] names the side).
    fn from(e: &ConnectionError) -> Self {
        Self::of(e, true)
    }
}

impl CloseReason {
    /// The reason for `e`, on the `client` side of the connection or the server's (a
    /// certificate error names the detecting side's own setting).
    pub(crate) fn of(e: &ConnectionError, client: bool) -> Self {
        match e {
            ConnectionError::LocallyClosed => Self::Local,
            ConnectionError::TimedOut => Self::TimedOut,
            ConnectionError::Reset => Self::Reset,
            ConnectionError::VersionMismatch => Self::VersionMismatch,
            ConnectionError::ApplicationClosed(a) => Self::Application {
                code: a.error_code.into_inner(),
                reason: String::from_utf8_lossy(&a.reason).into_owned(),
            },
            ConnectionError::TransportError(t) => match crypto_alert(t.code) {
                Some(alert) => Self::Tls(format!(
                    "detected here: {}{} (alert {})",
                    t.reason,
                    hint(&t.reason, client),
                    alert_name(alert)
                )),
                None => Self::Transport(format!("detected here: {t}")),
            },
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::CONNECTION_REFUSED =>
            {
                Self::Transport(
                    "the server refused the connection (CONNECTION_REFUSED: its handshake budget \
                     ServerConfig::max_pending_handshakes is reached, or this IP address's share \
                     of it, max_pending_handshakes_per_ip; it is shutting down; or a \
                     connection from this address and port is still open there)"
                        .into(),
                )
            }
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::APPLICATION_ERROR =>
            {
                Self::HandshakeRefused
            }
            ConnectionError::ConnectionClosed(c) => match crypto_alert(c.error_code) {
                Some(alert) => Self::Tls(format!(
                    "the peer refused the handshake with alert {}{}",
                    alert_name(alert),
                    refused_hint(alert)
                )),
                None => Self::Transport(format!(
                    "closed by peer: {} {}",
                    c.error_code,
                    String::from_utf8_lossy(&c.reason)
                )),
            },
            ConnectionError::CidsExhausted => Self::Transport("connection ids exhausted".into()),
        }
    }
}

//! Endpoint strings: `tcp://host:port`, `unix:///path`, `inproc://name`, `shm://name` and
//! `quic://host:port`.
//!
//! Host names are resolved when the string is parsed, on the parsing thread (never on a core
//! thread: cores only see resolved addresses), and every resolved address is kept: a connect
//! tries them all, Happy Eyeballs style, and a listen binds them all (see `transport/sock.rs`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or connect. Only the string changes between transports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://ip:port` (a literal address).
    Tcp(SocketAddr),
    /// `tcp://name:port`: a host name and every address it resolved to, in the resolver's
    /// order (RFC 6724 preference). A connect tries all of them (RFC 8305 Happy Eyeballs); a
    /// listen binds all of them and reports each bound address as an [`Endpoint::Tcp`].
    TcpHost {
        /// `name:port` as written.
        name: String,
        /// The resolved addresses (never empty, no duplicates).
        addrs: Vec<SocketAddr>,
    },
    /// `unix:///absolute/path` (a filesystem Unix socket).
    Unix(PathBuf),
    /// `inproc://name`: the in-process record transport (engines of this process only; see
    /// [`crate::inproc`]). Names are unique per process.
    Inproc(String),
    /// `shm://name[?option&...]`: the shared-memory record transport between processes of
    /// one host (netron-shm segments; docs/shm.md, "In the engine"). `name` is a Linux
    /// abstract socket name, or a filesystem socket path when it starts with `/` or `./`
    /// (`shm:///run/app.sock`). Options: see [`ShmOptions`].
    Shm {
        /// The rendezvous name (without options).
        name: String,
        /// The options written after `?`.
        options: ShmOptions,
    },
    /// `quic://host:port`: Netron over QUIC with TLS 1.3 (docs/quic.md). `host` is the name
    /// the server's certificate must carry (an IP literal is checked against the
    /// certificate's IP addresses); a connect tries `addrs` in order; a listen binds them all.
    /// TLS settings: `ProtocolConfig::with_quic_server` / `with_quic_client`.
    Quic {
        /// The host as written (without brackets for IPv6 literals).
        host: String,
        /// The resolved addresses (never empty).
        addrs: Vec<SocketAddr>,
    },
}

/// Options of an `shm://` endpoint, written after the name: `shm://name?trust_peer`,
/// `shm:///run/a.sock?mode=660&allow_uid=1000,1001`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShmOptions {
    /// `trust_peer`: records are parsed in place in the shared ring, with no private copy
    /// (docs/protocol.md §26.5). Only for a peer trusted not to rewrite the segment while
    /// it is read: a process of the same trust domain (docs/shm.md, "Lending ring memory").
    /// Default: every record is copied before the connection looks at it.
    pub trust_peer: bool,
    /// `allow_uid=UID[,UID...]` (listen only): clients whose user id (`SO_PEERCRED`) is not
    /// listed are refused before a segment is made. Default: any user who can reach the
    /// socket (for an abstract name: any local user).
    pub allow_uids: Option<Vec<u32>>,
    /// `mode=OCTAL` (listen only, filesystem names): the socket file's permission bits.
    pub mode: Option<u32>,
}

impl ShmOptions {
    fn parse(s: &str, query: &str) -> Result<ShmOptions, EndpointError> {
        let bad = |why: String| EndpointError::BadAddress(s.to_owned(), why);
        let mut o = ShmOptions::default();
        let mut seen: Vec<&str> = Vec::new();
        for opt in query.split('&') {
            let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
            if seen.contains(&key) {
                // `allow_uid=0&allow_uid=1000` would otherwise keep the last list only.
                return Err(bad(format!(
                    "shm:// option {key:?} given twice (give it once; allow_uid takes a list: \
                     allow_uid=1000,1001)"
                )));
            }
            seen.push(key);
            match (key, value) {
                ("trust_peer", "" | "1" | "true") => o.trust_peer = true,
                ("trust_peer", "0" | "false") => o.trust_peer = false,
                ("allow_uid", v) => {
                    let uids: Result<Vec<u32>, _> = v.split(',').map(str::parse).collect();
                    o.allow_uids = Some(uids.map_err(|_| {
                        bad(format!(
                            "allow_uid={v:?} is not a list of user ids (allow_uid=1000,1001)"
                        ))
                    })?);
                }
                ("mode", v) => {
                    o.mode = Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| {
                                bad(format!(
                                    "mode={v:?} is not octal permission bits (mode=660)"
                                ))
                            })?,
                    );
                }
                _ => {
                    return Err(bad(format!(
                        "unknown shm:// option {opt:?} (use trust_peer, allow_uid=UID[,UID...] \
                         or mode=OCTAL)"
                    )));
                }
            }
        }
        Ok(o)
    }
}

impl fmt::Display for ShmOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = '?';
        if self.trust_peer {
            write!(f, "{sep}trust_peer")?;
            sep = '&';
        }
        if let Some(uids) = &self.allow_uids {
            write!(f, "{sep}allow_uid=")?;
            for (i, u) in uids.iter().enumerate() {
                write!(f, "{}{u}", if i == 0 { "" } else { "," })?;
            }
            sep = '&';
        }
        if let Some(m) = self.mode {
            write!(f, "{sep}mode={m:o}")?;
        }
        Ok(())
    }
}

/// An endpoint string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not one Netron knows.
    #[error(
        "unknown endpoint scheme in {0:?}: use tcp://host:port, unix:///path, inproc://name or shm://name"
    )]
    UnknownScheme(String),
    /// The address part is malformed or did not resolve.
    #[error("invalid address in {0:?}: {1}")]
    BadAddress(String, String),
}

impl Endpoint {
    /// A TCP endpoint for `name` (`host:port`, used in messages) that connects to or listens
    /// on `addrs`, tried in the order given. Duplicates are dropped; `None` if `addrs` is
    /// empty. This is what parsing `tcp://name:port` produces, without the resolver.
    pub fn tcp_host(name: &str, addrs: impl IntoIterator<Item = SocketAddr>) -> Option<Endpoint> {
        let mut list: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            if !list.contains(&a) {
                list.push(a);
            }
        }
        (!list.is_empty()).then(|| Endpoint::TcpHost {
            name: name.to_owned(),
            addrs: list,
        })
    }

    /// The TCP addresses of this endpoint, in the order they are tried (empty for the others).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        match self {
            Endpoint::Tcp(a) => std::slice::from_ref(a),
            Endpoint::TcpHost { addrs, .. } => addrs,
            Endpoint::Unix(_)
            | Endpoint::Inproc(_)
            | Endpoint::Shm { .. }
            | Endpoint::Quic { .. } => &[],
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            if let Ok(a) = rest.parse::<SocketAddr>() {
                return Ok(Endpoint::Tcp(a));
            }
            let addrs = rest
                .to_socket_addrs()
                .map_err(|e| EndpointError::BadAddress(s.to_owned(), e.to_string()))?;
            Endpoint::tcp_host(rest, addrs).ok_or_else(|| {
                EndpointError::BadAddress(s.to_owned(), "resolved to nothing".into())
            })
        } else if let Some(rest) = s.strip_prefix("quic://") {
            let bad = |why: String| EndpointError::BadAddress(s.to_owned(), why);
            let Some((host, _port)) = rest.rsplit_once(':') else {
                return Err(bad("a port is needed (quic://host:port)".into()));
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad("the host is empty (quic://host:port)".into()));
            }
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for a in rest.to_socket_addrs().map_err(|e| bad(e.to_string()))? {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
            if addrs.is_empty() {
                return Err(bad("resolved to nothing".into()));
            }
            Ok(Endpoint::Quic {
                host: host.to_owned(),
                addrs,
            })
        } else if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(EndpointError::BadAddress(
                    s.to_owned(),
                    "the path must be absolute (unix:///path)".into(),
                ));
            }
            Ok(Endpoint::Unix(PathBuf::from(rest)))
        } else if let Some(name) = s.strip_prefix("inproc://") {
            if name.is_empty() {
                return Err(EndpointError::BadAddress(
                    s.to_owned(),
                    "the name is empty (inproc://name)".into(),
                ));
            }
            Ok(Endpoint::Inproc(name.to_owned()))
        } else if let Some(rest) = s.strip_prefix("shm://") {
            let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
            if name.is_empty() {
                return Err(EndpointError::BadAddress(
                    s.to_owned(),
                    "the name is empty (shm://name)".into(),
                ));
            }
            let options = if query.is_empty() {
                ShmOptions::default()
            } else {
                ShmOptions::parse(s, query)?
            };
            Ok(Endpoint::Shm {
                name: name.to_owned(),
                options,
            })
        } else {
            Err(EndpointError::UnknownScheme(s.to_owned()))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::TcpHost { name, .. } => write!(f, "tcp://{name}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Inproc(n) => write!(f, "inproc://{n}"),
            Endpoint::Shm { name, options } => write!(f, "shm://{name}{options}"),
            Endpoint::Quic { host, addrs } => match (host.contains(':'), addrs.first()) {
                (true, Some(a)) => write!(f, "quic://[{host}]:{}", a.port()),
                (false, Some(a)) => write!(f, "quic://{host}:{}", a.port()),
                (_, None) => write!(f, "quic://{host}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quic_with_the_host_kept_for_tls() {
        let Ok(Endpoint::Quic { host, addrs }) = "quic://127.0.0.1:4433".parse() else {
            panic!("quic:// parses");
        };
        assert_eq!(host, "127.0.0.1");
        assert_eq!(addrs, vec!["127.0.0.1:4433".parse().unwrap()]);
        let Ok(ep @ Endpoint::Quic { .. }) = "quic://[::1]:9".parse::<Endpoint>() else {
            panic!("quic:// with IPv6 parses");
        };
        assert_eq!(ep.to_string(), "quic://[::1]:9");
        assert!(matches!(
            "quic://nohost".parse::<Endpoint>(),
            Err(EndpointError::BadAddress(_, why)) if why.contains("port")
        ));
    }

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "tcp://127.0.0.1:7000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(
            "tcp://[::1]:7000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("[::1]:7000".parse().unwrap())
        );
        assert_eq!(
            "unix:///tmp/n.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/n.sock".into())
        );
        assert_eq!(
            "inproc://a/b c".parse::<Endpoint>().unwrap(),
            Endpoint::Inproc("a/b c".into())
        );
        assert_eq!(
            "inproc://x".parse::<Endpoint>().unwrap().to_string(),
            "inproc://x"
        );
        assert!(matches!(
            "inproc://".parse::<Endpoint>(),
            Err(EndpointError::BadAddress(..))
        ));
        assert_eq!(
            "shm://svc".parse::<Endpoint>().unwrap(),
            Endpoint::Shm {
                name: "svc".into(),
                options: ShmOptions::default()
            }
        );
        for s in [
            "shm:///run/a.sock",
            "shm://svc?trust_peer",
            "shm:///run/a.sock?allow_uid=0,1000&mode=660",
        ] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
        let Ok(Endpoint::Shm { options, .. }) = "shm://x?mode=640&allow_uid=7".parse() else {
            panic!("options parse");
        };
        assert_eq!(options.mode, Some(0o640));
        assert_eq!(options.allow_uids, Some(vec![7]));
        assert!(!options.trust_peer);
        for (bad, names) in [
            ("shm://", "empty"),
            ("shm://x?trust", "trust_peer"),
            ("shm://x?mode=999", "mode"),
            ("shm://x?allow_uid=me", "allow_uid"),
            // Twice: the first list would be dropped without a word (fresh user R8).
            (
                "shm://x?allow_uid=0&allow_uid=65534",
                "\"allow_uid\" given twice",
            ),
            ("shm://x?trust_peer&trust_peer=0", "given twice"),
        ] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.to_string().contains(names), "{bad}: {e}");
        }
        assert!(matches!(
            "udp://x".parse::<Endpoint>(),
            Err(EndpointError::UnknownScheme(_))
        ));
        assert!(matches!(
            "unix://rel".parse::<Endpoint>(),
            Err(EndpointError::BadAddress(..))
        ));
        assert!(matches!(
            "tcp://nope".parse::<Endpoint>(),
            Err(EndpointError::BadAddress(..))
        ));
        assert_eq!(
            "tcp://127.0.0.1:1".parse::<Endpoint>().unwrap().to_string(),
            "tcp://127.0.0.1:1"
        );
    }

    #[test]
    fn a_host_name_keeps_every_address() {
        let ep: Endpoint = "tcp://localhost:7000".parse().unwrap();
        assert_eq!(ep.to_string(), "tcp://localhost:7000");
        assert!(!ep.tcp_addrs().is_empty());
        assert!(
            ep.tcp_addrs()
                .iter()
                .all(|a| a.port() == 7000 && a.ip().is_loopback())
        );
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ep = Endpoint::tcp_host("x:1", [v6, v4, v6]).unwrap();
        assert_eq!(ep.tcp_addrs(), &[v6, v4]);
        assert!(Endpoint::tcp_host("x:1", []).is_none());
    }
}

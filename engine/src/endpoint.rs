//! Endpoint strings: `tcp://host:port`, `unix:///path`, `inproc://name` and `shm://name`.
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
    /// `shm://name`: the shared-memory record transport between processes of one host
    /// (netron-shm segments; docs/shm.md). `name` is a Linux abstract socket name, or a
    /// filesystem socket path when it starts with `/` or `./` (`shm:///run/app.sock`).
    Shm(String),
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
            Endpoint::Unix(_) | Endpoint::Inproc(_) | Endpoint::Shm(_) => &[],
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
        } else if let Some(name) = s.strip_prefix("shm://") {
            if name.is_empty() {
                return Err(EndpointError::BadAddress(
                    s.to_owned(),
                    "the name is empty (shm://name)".into(),
                ));
            }
            Ok(Endpoint::Shm(name.to_owned()))
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
            Endpoint::Shm(n) => write!(f, "shm://{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Endpoint::Shm("svc".into())
        );
        assert_eq!(
            "shm:///run/a.sock".parse::<Endpoint>().unwrap().to_string(),
            "shm:///run/a.sock"
        );
        assert!(matches!(
            "shm://".parse::<Endpoint>(),
            Err(EndpointError::BadAddress(..))
        ));
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

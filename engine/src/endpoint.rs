//! Endpoint strings: `tcp://host:port` and `unix:///path`.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or connect. Only the string changes between transports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://host:port` (host may be a name; the first resolved address is used).
    Tcp(SocketAddr),
    /// `unix:///absolute/path` (a filesystem Unix socket).
    Unix(PathBuf),
}

/// An endpoint string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The scheme is not one Netron knows.
    #[error("unknown endpoint scheme in {0:?}: use tcp://host:port or unix:///path")]
    UnknownScheme(String),
    /// The address part is malformed or did not resolve.
    #[error("invalid address in {0:?}: {1}")]
    BadAddress(String, String),
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            let addr = rest
                .to_socket_addrs()
                .map_err(|e| EndpointError::BadAddress(s.to_owned(), e.to_string()))?
                .next()
                .ok_or_else(|| {
                    EndpointError::BadAddress(s.to_owned(), "resolved to nothing".into())
                })?;
            Ok(Endpoint::Tcp(addr))
        } else if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                return Err(EndpointError::BadAddress(
                    s.to_owned(),
                    "the path must be absolute (unix:///path)".into(),
                ));
            }
            Ok(Endpoint::Unix(PathBuf::from(rest)))
        } else {
            Err(EndpointError::UnknownScheme(s.to_owned()))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes() {
        assert_eq!(
            "tcp://127.0.0.1:7000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:7000".parse().unwrap())
        );
        assert_eq!(
            "unix:///tmp/n.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/tmp/n.sock".into())
        );
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
}

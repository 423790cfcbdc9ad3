//! The introspection service `$sys` (docs/protocol.md §25): its name, version and methods,
//! the `ServiceList` reply body, and the semantic-version requirements (`calc@^1.2`) that a
//! client resolves against it.
//!
//! Resolution is **client-side**: the client calls `$sys@1.0.0` / `list` once per connection,
//! picks the highest exposed version that satisfies its requirement ([`resolve`]), and sends
//! that exact `name@MAJOR.MINOR.PATCH` in `:service`. Servers only ever match exact strings.
//!
//! ```
//! use netron_codec::sys::{ServiceReq, Version, resolve};
//!
//! let req = ServiceReq::parse(b"calc@^1.2").unwrap();
//! assert_eq!(req.name, b"calc");
//! let exposed = [Version::new(1, 1, 9), Version::new(1, 4, 0), Version::new(2, 0, 0)];
//! assert_eq!(resolve(&req.req, exposed), Some(Version::new(1, 4, 0)));
//! ```

use core::fmt;

use flatbuffers::FlatBufferBuilder;

use crate::generated as fb;

/// The service name of the introspection service.
pub const SYS_NAME: &str = "$sys";
/// The version of `$sys` this document defines.
pub const SYS_VERSION: Version = Version::new(1, 0, 0);
/// The exact `:service` value of `$sys` version 1.0.0.
pub const SYS_SERVICE: &str = "$sys@1.0.0";
/// `$sys` method `list`: empty request (or a service name, UTF-8, to list only its
/// versions), reply a `ServiceList` body.
pub const METHOD_LIST: &str = "list";
/// Longest service name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// A version or requirement is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// No `@` between the name and the version.
    #[error("expected name@version")]
    MissingAt,
    /// An empty or over-long name, or one with a byte outside printable ASCII or an `@`.
    #[error("bad service name")]
    BadName,
    /// Not `MAJOR.MINOR.PATCH` with decimal numbers (no leading zeros, each < 2^32).
    #[error("bad version number")]
    BadVersion,
    /// An unknown requirement operator or a malformed requirement.
    #[error("bad version requirement")]
    BadRequirement,
}

/// A version `MAJOR.MINOR.PATCH` (Semantic Versioning 2.0.0 without pre-release or build
/// parts, which Netron service versions do not use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible changes.
    pub major: u32,
    /// Compatible additions.
    pub minor: u32,
    /// Fixes.
    pub patch: u32,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses exactly `MAJOR.MINOR.PATCH`.
    ///
    /// # Errors
    ///
    /// [`VersionError::BadVersion`].
    pub fn parse(s: &[u8]) -> Result<Self, VersionError> {
        let parts = numbers(s)?;
        match parts {
            [Some(major), Some(minor), Some(patch)] => Ok(Self::new(major, minor, patch)),
            _ => Err(VersionError::BadVersion),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

fn number(s: &[u8]) -> Result<u32, VersionError> {
    if s.is_empty() || s.len() > 10 || (s.len() > 1 && s[0] == b'0') {
        return Err(VersionError::BadVersion);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(VersionError::BadVersion);
        }
        v = v * 10 + (b - b'0') as u64;
    }
    u32::try_from(v).map_err(|_| VersionError::BadVersion)
}

/// One to three dot-separated numbers.
fn numbers(s: &[u8]) -> Result<[Option<u32>; 3], VersionError> {
    let mut out = [None; 3];
    for (i, part) in s.split(|&b| b == b'.').enumerate() {
        let slot = out.get_mut(i).ok_or(VersionError::BadVersion)?;
        *slot = Some(number(part)?);
    }
    Ok(out)
}

fn check_name(name: &[u8]) -> Result<(), VersionError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || name
            .iter()
            .any(|&b| !(0x21..=0x7e).contains(&b) || b == b'@')
    {
        return Err(VersionError::BadName);
    }
    Ok(())
}

/// An exact service identity `name@MAJOR.MINOR.PATCH`, as sent in `:service`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceId<'a> {
    /// The name.
    pub name: &'a [u8],
    /// The version.
    pub version: Version,
}

impl<'a> ServiceId<'a> {
    /// Parses a `:service` value.
    ///
    /// # Errors
    ///
    /// A [`VersionError`] naming the part that is wrong.
    pub fn parse(s: &'a [u8]) -> Result<Self, VersionError> {
        let at = s
            .iter()
            .rposition(|&b| b == b'@')
            .ok_or(VersionError::MissingAt)?;
        let name = &s[..at];
        check_name(name)?;
        Ok(Self {
            name,
            version: Version::parse(&s[at + 1..])?,
        })
    }
}

/// How a requirement compares versions (Cargo's operators, which the brief's `name@^1.2`
/// follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `^` (or no operator): compatible with, by the left-most non-zero component.
    Caret,
    /// `~`: same major and minor (same major if only the major is given).
    Tilde,
    /// `=`: exactly the given components.
    Exact,
    /// `*`: any version.
    Any,
}

/// A version requirement: `^1.2`, `~1.2.3`, `=1.2.3`, `1.2` (same as `^1.2`), `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionReq {
    /// The operator.
    pub op: Op,
    /// The components given (missing ones are `None`).
    pub parts: [Option<u32>; 3],
}

impl VersionReq {
    /// Any version.
    pub const ANY: VersionReq = VersionReq {
        op: Op::Any,
        parts: [None; 3],
    };

    /// Parses a requirement.
    ///
    /// # Errors
    ///
    /// [`VersionError::BadRequirement`] or [`VersionError::BadVersion`].
    pub fn parse(s: &[u8]) -> Result<Self, VersionError> {
        if s == b"*" {
            return Ok(Self::ANY);
        }
        let (op, rest) = match s.first() {
            Some(b'^') => (Op::Caret, &s[1..]),
            Some(b'~') => (Op::Tilde, &s[1..]),
            Some(b'=') => (Op::Exact, &s[1..]),
            Some(b) if b.is_ascii_digit() => (Op::Caret, s),
            _ => return Err(VersionError::BadRequirement),
        };
        let parts = numbers(rest)?;
        Ok(Self { op, parts })
    }

    /// Whether `v` satisfies the requirement.
    pub fn matches(&self, v: Version) -> bool {
        let [ma, mi, pa] = self.parts;
        let (Some(major), mi_) = (ma, mi) else {
            return self.op == Op::Any;
        };
        let lower = Version::new(major, mi_.unwrap_or(0), pa.unwrap_or(0));
        match self.op {
            Op::Any => true,
            Op::Exact => {
                v.major == major
                    && mi.is_none_or(|m| v.minor == m)
                    && pa.is_none_or(|p| v.patch == p)
            }
            Op::Tilde => v >= lower && v.major == major && mi.is_none_or(|m| v.minor == m),
            Op::Caret => {
                if v < lower || v.major != major {
                    return false;
                }
                match (major, mi, pa) {
                    (0, Some(0), Some(p)) => v.minor == 0 && v.patch == p,
                    (0, Some(m), _) => v.minor == m,
                    _ => true,
                }
            }
        }
    }
}

/// A service requirement `name@REQ` (or just `name`, any version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceReq<'a> {
    /// The service name.
    pub name: &'a [u8],
    /// The version requirement.
    pub req: VersionReq,
}

impl<'a> ServiceReq<'a> {
    /// Parses `name@REQ` or `name`.
    ///
    /// # Errors
    ///
    /// A [`VersionError`] naming the part that is wrong.
    pub fn parse(s: &'a [u8]) -> Result<Self, VersionError> {
        let (name, req) = match s.iter().rposition(|&b| b == b'@') {
            Some(at) => (&s[..at], VersionReq::parse(&s[at + 1..])?),
            None => (s, VersionReq::ANY),
        };
        check_name(name)?;
        Ok(Self { name, req })
    }
}

/// The highest of `exposed` that satisfies `req` (§25.3).
pub fn resolve(req: &VersionReq, exposed: impl IntoIterator<Item = Version>) -> Option<Version> {
    exposed.into_iter().filter(|v| req.matches(*v)).max()
}

/// Resolves `req` against a verified `ServiceList` (the `$sys.list` reply): the highest version
/// of `req.name` that satisfies it. Entries whose version does not parse are skipped.
pub fn resolve_in_list(list: &fb::ServiceList<'_>, req: &ServiceReq<'_>) -> Option<Version> {
    let services = list.services()?;
    resolve(
        &req.req,
        services
            .iter()
            .filter(|s| s.name().as_bytes() == req.name)
            .filter_map(|s| Version::parse(s.version().as_bytes()).ok()),
    )
}

/// The kind of a method, as listed by `$sys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MethodKind {
    /// Request → Response.
    Unary = 0,
    /// StreamOpen → many StreamData from the callee.
    ServerStream = 1,
    /// Many StreamData from the opener → one reply.
    ClientStream = 2,
    /// Both directions.
    Bidi = 3,
}

/// One service version for [`service_list_body`].
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo<'a> {
    /// The name.
    pub name: &'a str,
    /// The version.
    pub version: Version,
    /// Its methods.
    pub methods: &'a [(&'a str, MethodKind)],
}

/// Builds a `ServiceList` body (the `$sys.list` reply) in `fbb` (reset first) and returns its
/// bytes.
pub fn service_list_body<'b>(
    fbb: &'b mut FlatBufferBuilder<'static>,
    services: &[ServiceInfo<'_>],
) -> &'b [u8] {
    fbb.reset();
    let mut offs = Vec::with_capacity(services.len());
    for s in services {
        let methods: Vec<_> = s
            .methods
            .iter()
            .map(|(name, kind)| {
                let name = Some(fbb.create_string(name));
                fb::MethodDescriptor::create(
                    fbb,
                    &fb::MethodDescriptorArgs {
                        name,
                        kind: fb::MethodKind(*kind as u8),
                    },
                )
            })
            .collect();
        let methods = Some(fbb.create_vector(&methods));
        let name = Some(fbb.create_string(s.name));
        let version = Some(fbb.create_string(&s.version.to_string()));
        offs.push(fb::ServiceDescriptor::create(
            fbb,
            &fb::ServiceDescriptorArgs {
                name,
                version,
                methods,
            },
        ));
    }
    let services = Some(fbb.create_vector(&offs));
    let list = fb::ServiceList::create(fbb, &fb::ServiceListArgs { services });
    fbb.finish_minimal(list);
    fbb.finished_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> VersionReq {
        VersionReq::parse(s.as_bytes()).unwrap()
    }
    fn v(s: &str) -> Version {
        Version::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn cargo_semantics() {
        assert!(req("^1.2").matches(v("1.2.0")));
        assert!(req("^1.2").matches(v("1.9.9")));
        assert!(!req("^1.2").matches(v("1.1.9")));
        assert!(!req("^1.2").matches(v("2.0.0")));
        assert!(req("1.2").matches(v("1.3.0")));
        assert!(req("^0.2.3").matches(v("0.2.9")));
        assert!(!req("^0.2.3").matches(v("0.3.0")));
        assert!(!req("^0.2.3").matches(v("0.2.2")));
        assert!(req("^0.0.3").matches(v("0.0.3")));
        assert!(!req("^0.0.3").matches(v("0.0.4")));
        assert!(req("^0.0").matches(v("0.0.7")));
        assert!(!req("^0.0").matches(v("0.1.0")));
        assert!(req("^0").matches(v("0.9.0")));
        assert!(req("~1.2.3").matches(v("1.2.9")));
        assert!(!req("~1.2.3").matches(v("1.3.0")));
        assert!(!req("~1.2.3").matches(v("1.2.2")));
        assert!(req("~1").matches(v("1.5.0")));
        assert!(req("=1.2.3").matches(v("1.2.3")));
        assert!(!req("=1.2.3").matches(v("1.2.4")));
        assert!(req("=1.2").matches(v("1.2.4")));
        assert!(req("*").matches(v("7.0.0")));
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "^",
            "^1.",
            "1.2.3.4",
            "01.2",
            "x",
            ">=1",
            "^1.-2",
            "4294967296",
        ] {
            assert!(VersionReq::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(ServiceId::parse(b"calc1.2.3"), Err(VersionError::MissingAt));
        assert_eq!(ServiceId::parse(b"@1.2.3"), Err(VersionError::BadName));
        assert_eq!(ServiceId::parse(b"ca lc@1.2.3"), Err(VersionError::BadName));
        assert_eq!(ServiceId::parse(b"calc@1.2"), Err(VersionError::BadVersion));
        let id = ServiceId::parse(SYS_SERVICE.as_bytes()).unwrap();
        assert_eq!((id.name, id.version), (SYS_NAME.as_bytes(), SYS_VERSION));
    }

    #[test]
    fn list_round_trip_and_resolution() {
        let mut fbb = FlatBufferBuilder::new();
        let body = service_list_body(
            &mut fbb,
            &[
                ServiceInfo {
                    name: SYS_NAME,
                    version: SYS_VERSION,
                    methods: &[(METHOD_LIST, MethodKind::Unary)],
                },
                ServiceInfo {
                    name: "calc",
                    version: Version::new(1, 2, 0),
                    methods: &[
                        ("add", MethodKind::Unary),
                        ("sum", MethodKind::ClientStream),
                    ],
                },
                ServiceInfo {
                    name: "calc",
                    version: Version::new(1, 7, 1),
                    methods: &[],
                },
            ],
        )
        .to_vec();
        let list = crate::control::read_service_list(&body).unwrap();
        let r = ServiceReq::parse(b"calc@^1.2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), Some(Version::new(1, 7, 1)));
        let r = ServiceReq::parse(b"calc@~1.2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), Some(Version::new(1, 2, 0)));
        let r = ServiceReq::parse(b"calc@^2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), None);
    }
}

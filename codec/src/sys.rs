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
    #[error("bad service name (1 to 128 bytes of printable ASCII, no '@')")]
    BadName,
    /// Not a Semantic Versioning 2.0.0 version `MAJOR.MINOR.PATCH[-PRERELEASE]` (no leading
    /// zeros, no build metadata).
    #[error("bad version (expected MAJOR.MINOR.PATCH or MAJOR.MINOR.PATCH-PRERELEASE)")]
    BadVersion,
    /// Not a requirement the `semver` crate accepts (`^1.2`, `~1.2.3`, `=1.2`, `1`, `*`,
    /// `>=1.2, <1.5`, ...).
    #[error("bad version requirement (expected e.g. ^1.2, ~1.2.3, =1.2.3, 1, *)")]
    BadRequirement,
}

/// A service version: Semantic Versioning 2.0.0 `MAJOR.MINOR.PATCH`, optionally with a
/// pre-release part (`2.0.0-beta.1`); never build metadata (two versions differing only in
/// it would be one identity). The `semver` crate's type, so its ordering (a pre-release
/// sorts before its release) and matching rules apply.
pub type Version = semver::Version;

/// A version requirement, with the `semver` crate's (Cargo's) rules: `^1.2` (and `1.2`),
/// `~1.2.3`, `=1.2`, `*`, comparisons such as `>=1.2, <1.5`. A pre-release version matches
/// only a requirement that names a pre-release of the same `MAJOR.MINOR.PATCH`
/// (`^2.0.0-beta` matches `2.0.0-beta.3` and `2.0.1`, `^2` matches neither `2.0.0-beta.3`
/// nor any other pre-release).
pub type VersionReq = semver::VersionReq;

/// Parses a service version (see [`Version`]).
///
/// # Errors
///
/// [`VersionError::BadVersion`] for anything else (build metadata included).
pub fn parse_version(s: &[u8]) -> Result<Version, VersionError> {
    let text = core::str::from_utf8(s).map_err(|_| VersionError::BadVersion)?;
    let v = Version::parse(text).map_err(|_| VersionError::BadVersion)?;
    if !v.build.is_empty() {
        return Err(VersionError::BadVersion);
    }
    Ok(v)
}

/// Parses a version requirement (see [`VersionReq`]).
///
/// # Errors
///
/// [`VersionError::BadRequirement`].
pub fn parse_req(s: &[u8]) -> Result<VersionReq, VersionError> {
    let text = core::str::from_utf8(s).map_err(|_| VersionError::BadRequirement)?;
    VersionReq::parse(text).map_err(|_| VersionError::BadRequirement)
}

/// Checks a service name: 1 … 128 bytes in `0x21..=0x7e`, without `@` (§25.2).
///
/// # Errors
///
/// [`VersionError::BadName`].
pub fn check_name(name: &[u8]) -> Result<(), VersionError> {
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

/// An exact service identity `name@VERSION`, as sent in `:service`.
#[derive(Debug, Clone, PartialEq, Eq)]
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
            version: parse_version(&s[at + 1..])?,
        })
    }
}

/// A service requirement `name@REQ` (or just `name`: any release, i.e. `*`, which by the
/// `semver` rules matches no pre-release).
#[derive(Debug, Clone, PartialEq, Eq)]
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
            Some(at) => (&s[..at], parse_req(&s[at + 1..])?),
            None => (s, VersionReq::STAR),
        };
        check_name(name)?;
        Ok(Self { name, req })
    }
}

/// The highest of `exposed` that satisfies `req` (§25.3).
pub fn resolve(req: &VersionReq, exposed: impl IntoIterator<Item = Version>) -> Option<Version> {
    exposed.into_iter().filter(|v| req.matches(v)).max()
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
            .filter_map(|s| parse_version(s.version().as_bytes()).ok()),
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
#[derive(Debug, Clone)]
pub struct ServiceInfo<'a> {
    /// The name.
    pub name: &'a str,
    /// The version.
    pub version: &'a Version,
    /// Its methods.
    pub methods: &'a [(&'a str, MethodKind)],
}

/// Builds a `ServiceList` body (the `$sys.list` reply) in `fbb` (reset first) and returns its
/// bytes; `features` is the lister's capability word (docs/protocol.md §21, §25.1).
pub fn service_list_body<'b>(
    fbb: &'b mut FlatBufferBuilder<'static>,
    services: &[ServiceInfo<'_>],
    features: u64,
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
    let list = fb::ServiceList::create(fbb, &fb::ServiceListArgs { services, features });
    fbb.finish_minimal(list);
    fbb.finished_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> VersionReq {
        parse_req(s.as_bytes()).unwrap()
    }
    fn v(s: &str) -> Version {
        parse_version(s.as_bytes()).unwrap()
    }

    #[test]
    fn cargo_semantics() {
        assert!(req("^1.2").matches(&v("1.2.0")));
        assert!(req("^1.2").matches(&v("1.9.9")));
        assert!(!req("^1.2").matches(&v("1.1.9")));
        assert!(!req("^1.2").matches(&v("2.0.0")));
        assert!(req("1.2").matches(&v("1.3.0")));
        assert!(req("^0.2.3").matches(&v("0.2.9")));
        assert!(!req("^0.2.3").matches(&v("0.3.0")));
        assert!(!req("^0.2.3").matches(&v("0.2.2")));
        assert!(req("^0.0.3").matches(&v("0.0.3")));
        assert!(!req("^0.0.3").matches(&v("0.0.4")));
        assert!(req("^0.0").matches(&v("0.0.7")));
        assert!(!req("^0.0").matches(&v("0.1.0")));
        assert!(req("^0").matches(&v("0.9.0")));
        assert!(req("~1.2.3").matches(&v("1.2.9")));
        assert!(!req("~1.2.3").matches(&v("1.3.0")));
        assert!(!req("~1.2.3").matches(&v("1.2.2")));
        assert!(req("~1").matches(&v("1.5.0")));
        assert!(req("=1.2.3").matches(&v("1.2.3")));
        assert!(!req("=1.2.3").matches(&v("1.2.4")));
        assert!(req("=1.2").matches(&v("1.2.4")));
        assert!(req("*").matches(&v("7.0.0")));
        // Pre-releases (the semver crate's rule): only a requirement naming a pre-release
        // of the same MAJOR.MINOR.PATCH matches one.
        assert!(!req("^2").matches(&v("2.0.0-beta.1")));
        assert!(!req("*").matches(&v("2.0.0-beta.1")));
        assert!(req("^2.0.0-beta").matches(&v("2.0.0-beta.3")));
        assert!(req("^2.0.0-beta").matches(&v("2.0.1")));
        assert!(!req("^2.0.0-beta").matches(&v("2.0.1-rc.1")));
        assert!(v("2.0.0-beta.1") < v("2.0.0"));
    }

    #[test]
    fn malformed() {
        for bad in ["", "^", "^1.", "1.2.3.4", "01.2", "y", "^1.-2"] {
            assert!(parse_req(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            ServiceId::parse(b"calc@1.2.3+build"),
            Err(VersionError::BadVersion)
        );
        assert!(ServiceId::parse(b"calc@1.2.3-rc.1").is_ok());
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
                    version: &SYS_VERSION,
                    methods: &[(METHOD_LIST, MethodKind::Unary)],
                },
                ServiceInfo {
                    name: "calc",
                    version: &Version::new(1, 2, 0),
                    methods: &[
                        ("add", MethodKind::Unary),
                        ("sum", MethodKind::ClientStream),
                    ],
                },
                ServiceInfo {
                    name: "calc",
                    version: &Version::new(1, 7, 1),
                    methods: &[],
                },
            ],
            crate::features::STREAMS | crate::features::OFFERS_SYS,
        )
        .to_vec();
        let list = crate::control::read_service_list(&body).unwrap();
        assert_eq!(
            list.features(),
            crate::features::STREAMS | crate::features::OFFERS_SYS
        );
        let r = ServiceReq::parse(b"calc@^1.2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), Some(Version::new(1, 7, 1)));
        let r = ServiceReq::parse(b"calc@~1.2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), Some(Version::new(1, 2, 0)));
        let r = ServiceReq::parse(b"calc@^2").unwrap();
        assert_eq!(resolve_in_list(&list, &r), None);
    }
}

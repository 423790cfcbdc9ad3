//! `$sys`, the introspection service every core serves (docs/protocol.md §25), and the
//! client-side resolution of requirements such as `calc@^1.2` against it.
//!
//! Server side: a core's registry always holds `$sys@1.0.0`, rebuilt whenever services are
//! added or removed ([`crate::Engine::add_service`], [`crate::Engine::remove_service`]); its
//! `list` method answers with a `ServiceList` body encoded once per change (the empty
//! request) or on demand (a request naming one service). Servers match `:service` exactly;
//! a miss costs the message that names the versions of that name that exist, or says which
//! part of a malformed `:service` is wrong.
//!
//! Client side ([`crate::Channel::resolve`], [`crate::Core::resolve`]): one `$sys.list` per
//! connection, cached, refreshed after a call gets `NotFound`; the pick is the highest exposed
//! version that satisfies the requirement by the `semver` crate's rules.

mod resolve;

pub(crate) use resolve::{Cache, CoreCache, PeerCache};

use std::sync::Arc;

use flatbuffers::FlatBufferBuilder;
use netron_codec::sys::{
    METHOD_LIST, MethodKind, SYS_NAME, SYS_VERSION, ServiceId, ServiceInfo, service_list_body,
};

use crate::service::{Handler, Registry, Service};
use crate::{Status, StatusCode};

/// How a method is served, as `$sys` lists it.
fn kind(h: &Handler) -> MethodKind {
    match h {
        Handler::Sync(_) | Handler::Async(_) | Handler::Deferred(_) => MethodKind::Unary,
        Handler::Stream(_, kind) => *kind,
    }
}

/// One listed service version, owned.
struct Entry {
    name: String,
    version: netron_codec::sys::Version,
    methods: Vec<(String, MethodKind)>,
}

/// What `$sys.list` answers, for one set of services.
struct Snapshot {
    entries: Vec<Entry>,
    /// The reply to the empty request (every service), encoded once.
    full: Vec<u8>,
}

fn encode(entries: &[&Entry], features: u64) -> Vec<u8> {
    let methods: Vec<Vec<(&str, MethodKind)>> = entries
        .iter()
        .map(|e| e.methods.iter().map(|(m, k)| (m.as_str(), *k)).collect())
        .collect();
    let infos: Vec<ServiceInfo<'_>> = entries
        .iter()
        .zip(&methods)
        .map(|(e, m)| ServiceInfo {
            name: &e.name,
            version: &e.version,
            methods: m,
        })
        .collect();
    let mut fbb = FlatBufferBuilder::new();
    service_list_body(&mut fbb, &infos, features).to_vec()
}

/// The `$sys@1.0.0` service listing `services` and itself, and the capability word
/// `features` (what this side offers in its handshake, docs/protocol.md §21).
pub(crate) fn sys_service<'a>(
    services: impl Iterator<Item = &'a Service>,
    features: u64,
) -> Service {
    let mut entries: Vec<Entry> = services
        .map(|s| {
            let mut methods: Vec<(String, MethodKind)> = s
                .handlers()
                .map(|(m, h)| (String::from_utf8_lossy(m).into_owned(), kind(h)))
                .collect();
            methods.sort_by(|a, b| a.0.cmp(&b.0));
            Entry {
                name: s.name().to_owned(),
                version: s.version().clone(),
                methods,
            }
        })
        .collect();
    entries.push(Entry {
        name: SYS_NAME.to_owned(),
        version: SYS_VERSION,
        methods: vec![(METHOD_LIST.to_owned(), MethodKind::Unary)],
    });
    entries.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let full = encode(&entries.iter().collect::<Vec<_>>(), features);
    let snap = Arc::new(Snapshot { entries, full });
    Service::with_version(SYS_NAME, SYS_VERSION).unary(METHOD_LIST, move |req, reply| {
        let name = req.payload();
        if name.is_empty() {
            reply.write(&snap.full);
        } else {
            let some: Vec<&Entry> = snap
                .entries
                .iter()
                .filter(|e| e.name.as_bytes() == name)
                .collect();
            reply.write(&encode(&some, features));
        }
        Ok(())
    })
}

/// How much of an unknown `:service` a message repeats, in bytes.
const SHOWN: usize = 140;

/// The status for a `:service` the registry does not hold: `InvalidArgument` naming what
/// is malformed, or `NotFound` naming the versions of that name that exist.
#[cold]
pub(crate) fn unknown_service(registry: &Registry, service: &[u8]) -> Status {
    let shown = shown(service);
    let id = match ServiceId::parse(service) {
        Ok(id) => id,
        Err(e) => {
            return Status::new(
                StatusCode::InvalidArgument,
                format!(
                    ":service {shown:?} is malformed: {e}; servers match an exact \
                     name@MAJOR.MINOR.PATCH (requirements such as name@^1.2 are resolved by \
                     the client through $sys)"
                ),
            );
        }
    };
    let mut versions: Vec<&netron_codec::sys::Version> = registry
        .services()
        .filter(|s| s.name().as_bytes() == id.name)
        .map(|s| s.version())
        .collect();
    versions.sort();
    let name = String::from_utf8_lossy(id.name);
    let message = if versions.is_empty() {
        format!("no service {shown}: the callee serves no service named {name}")
    } else {
        format!(
            "no service {shown}: the callee serves {name} in versions {}",
            join(versions.iter().map(|v| v.to_string()))
        )
    };
    Status::new(StatusCode::NotFound, message)
}

/// `s` for a message: at most [`SHOWN`] bytes of it.
pub(crate) fn shown(s: &[u8]) -> String {
    let head = String::from_utf8_lossy(&s[..s.len().min(SHOWN)]);
    if s.len() > SHOWN {
        format!("{head}... ({} bytes)", s.len())
    } else {
        head.into_owned()
    }
}

/// `a, b, c`.
pub(crate) fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

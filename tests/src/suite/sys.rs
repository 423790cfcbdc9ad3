//! `$sys` (docs/protocol.md §25; docs/architecture.md, "Services at run time"): what it lists,
//! client-side resolution of requirements by the `semver` crate's rules (a table, with
//! pre-releases), `NotFound` naming the versions that exist, `InvalidArgument` for a malformed
//! `:service`, services added and removed while the engine runs (calls in flight on a removed
//! service finish), and resolution on a caller-driven core.

use std::sync::mpsc;
use std::time::Duration;

use netron_codec::control::read_service_list;
use netron_codec::sys::{METHOD_LIST, SYS_SERVICE};
use netron_engine::{Bytes, CallError, CallSlot, CoreConfig, Engine, Service, StatusCode};

use super::util::within;
use crate::Transport;

const DL: Option<Duration> = Some(Duration::from_secs(5));

/// `calc@version` whose `which` answers its version and `add` adds two bytes.
fn calc_at(version: &str) -> Service {
    let v = version.to_owned();
    Service::new("calc", version)
        .unwrap()
        .unary("which", move |_, reply| {
            reply.write(v.as_bytes());
            Ok(())
        })
        .unary("add", |req, reply| {
            let p = req.payload();
            reply.write(&[p.iter().fold(0u8, |a, b| a.wrapping_add(*b))]);
            Ok(())
        })
}

const EXPOSED: [&str; 9] = [
    "0.2.3",
    "0.2.9",
    "0.3.0",
    "1.2.0",
    "1.4.1",
    "1.10.0",
    "2.0.0-beta.1",
    "2.0.0-beta.3",
    "3.0.0-rc.1",
];

fn server(t: &Transport, versions: &[&str], cores: usize) -> (Engine, String) {
    let mut b = crate::builder(t).cores(cores).listen(&(t.listen)("sys"));
    for v in versions {
        b = b.service(calc_at(v));
    }
    let e = b
        .build()
        .unwrap_or_else(|e| panic!("{}: engine: {e}", t.name));
    let addr = crate::dial_of(t, &e).to_string();
    (e, addr)
}

/// Requirement, expected pick (`None`: NotFound), against [`EXPOSED`].
const TABLE: [(&str, Option<&str>); 14] = [
    ("calc@^1.2", Some("1.10.0")),
    ("calc@1.2", Some("1.10.0")),
    ("calc@~1.4", Some("1.4.1")),
    ("calc@~1.2.3", None),
    ("calc@1", Some("1.10.0")),
    ("calc", Some("1.10.0")),
    ("calc@^0.2.3", Some("0.2.9")),
    ("calc@=1.2", Some("1.2.0")),
    ("calc@>=1.3, <1.5", Some("1.4.1")),
    ("calc@^2", None),
    ("calc@^2.0.0-beta", Some("2.0.0-beta.3")),
    ("calc@=2.0.0-beta.1", Some("2.0.0-beta.1")),
    ("calc@^3.0.0-rc", Some("3.0.0-rc.1")),
    ("calc@^4", None),
];

/// The resolution table: each requirement's pick, checked by [`netron_engine::Channel::resolve`]
/// and by a call that lands on that version; one listing per connection.
pub fn requirements_resolve_to_the_highest_matching_version(t: &Transport) {
    let (e, addr) = server(t, &EXPOSED, 1);
    let ch = e.client().connect(&addr).unwrap();
    for (req, want) in TABLE {
        match want {
            Some(v) => {
                assert_eq!(ch.resolve(req, DL).unwrap(), format!("calc@{v}"), "{req}");
                // The call goes to that exact version.
                let got = ch.call(req, "which", Bytes::new(), DL).unwrap();
                assert_eq!(got, v.as_bytes(), "{}: {req}", t.name);
            }
            None => {
                let err = ch.call(req, "which", Bytes::new(), DL).unwrap_err();
                assert_eq!(err.code(), StatusCode::NotFound, "{req}: {err}");
            }
        }
    }
    // Exact names pass through unchanged, with no round trip.
    assert_eq!(ch.resolve("calc@1.4.1", DL).unwrap(), "calc@1.4.1");
    // One `$sys.list` for the whole table, plus one refetch per requirement that matched
    // nothing in the cached listing (3), each a call the server served.
    let calls = e.total_stats().calls_in();
    let table_calls = TABLE.iter().filter(|(_, w)| w.is_some()).count() as u64;
    assert_eq!(calls, table_calls + 1 + 3, "{}: calls_in", t.name);
    drop(ch);
    e.shutdown(Duration::from_secs(1));
}

/// `NotFound` names the versions that exist (client and server side); a malformed `:service`
/// gets `InvalidArgument` naming the part; a malformed requirement is refused locally.
pub fn not_found_names_the_versions_that_exist(t: &Transport) {
    let (e, addr) = server(t, &["1.2.0", "1.4.1", "2.0.0-beta.1"], 1);
    let ch = e.client().connect(&addr).unwrap();
    // Client side: no match.
    let err = ch.call("calc@^3", "which", Bytes::new(), DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    let msg = err.status().message.to_string();
    assert!(
        msg.contains("calc@^3") && msg.contains("1.2.0, 1.4.1, 2.0.0-beta.1"),
        "{}: {msg}",
        t.name
    );
    let err = ch.resolve("nosuch@1", DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    assert!(
        err.status().message.contains("no service named nosuch"),
        "{err}"
    );
    // Server side: an exact version that is not exposed.
    let err = ch
        .method("calc@3.0.0", "which")
        .call(Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    assert!(
        err.status().message.contains("1.2.0, 1.4.1, 2.0.0-beta.1"),
        "{}: {err}",
        t.name
    );
    // Server side: a malformed `:service` (a requirement sent raw, no version, a bad name).
    for (bad, part) in [
        ("calc@^1.2", "bad version"),
        ("calc", "expected name@version"),
        ("ca lc@1.0.0", "bad service name"),
    ] {
        let err = ch.method(bad, "which").call(Bytes::new(), DL).unwrap_err();
        assert_eq!(err.code(), StatusCode::InvalidArgument, "{bad}: {err}");
        assert!(err.status().message.contains(part), "{bad}: {err}");
    }
    // Client side: a malformed requirement is refused before anything is sent.
    let err = ch.call("calc@^^1", "which", Bytes::new(), DL).unwrap_err();
    assert!(matches!(err, CallError::Refused(_)), "{err}");
    assert_eq!(err.code(), StatusCode::InvalidArgument);
    // Still usable.
    assert_eq!(ch.call("calc@~1.2", "add", &[2u8, 3][..], DL).unwrap(), [5]);
    drop(ch);
    e.shutdown(Duration::from_secs(1));
}

/// `$sys.list` lists every service version with its methods, and itself; a name filters.
pub fn sys_lists_services_versions_and_methods(t: &Transport) {
    let (e, addr) = server(t, &["1.2.0", "2.0.0-beta.1"], 1);
    let ch = e.client().connect(&addr).unwrap();
    let sys = ch.method(SYS_SERVICE, METHOD_LIST);
    let body = sys.call(Bytes::new(), DL).unwrap();
    let list = read_service_list(&body).unwrap();
    let mut seen: Vec<(String, String, Vec<String>)> = list
        .services()
        .unwrap()
        .iter()
        .map(|s| {
            let methods = s
                .methods()
                .map(|m| m.iter().map(|m| m.name().to_owned()).collect())
                .unwrap_or_default();
            (s.name().to_owned(), s.version().to_owned(), methods)
        })
        .collect();
    seen.sort();
    let calc_methods = vec!["add".to_owned(), "which".to_owned()];
    assert_eq!(
        seen,
        vec![
            ("$sys".into(), "1.0.0".into(), vec!["list".to_owned()]),
            ("calc".into(), "1.2.0".into(), calc_methods.clone()),
            ("calc".into(), "2.0.0-beta.1".into(), calc_methods),
        ],
        "{}",
        t.name
    );
    // A request naming one service lists only its versions.
    let body = sys.call(&b"$sys"[..], DL).unwrap();
    let list = read_service_list(&body).unwrap();
    assert_eq!(list.services().unwrap().len(), 1);
    let body = sys.call(&b"nosuch"[..], DL).unwrap();
    let list = read_service_list(&body).unwrap();
    assert_eq!(list.services().map_or(0, |s| s.len()), 0);
    // The engine's capabilities: what its handshake offers (streams, events, `$sys`).
    use netron_codec::features::{EVENTS, OFFERS_SYS, STREAMS};
    let features = ch.peer_features(DL).unwrap();
    assert_eq!(
        features,
        list.features(),
        "the cached listing says the same"
    );
    assert_eq!(
        features & (STREAMS | EVENTS | OFFERS_SYS),
        STREAMS | EVENTS | OFFERS_SYS,
        "{features:#x}"
    );
    // A server configured without streams says so.
    let cfg = netron_engine::ProtocolConfig::default().with_streams(false);
    let (plain, paddr) = crate::engine(t, cfg, &[], "sys-nostreams");
    let pch = plain.client().connect(&paddr).unwrap();
    assert_eq!(pch.peer_features(DL).unwrap() & STREAMS, 0);
    drop((ch, pch));
    plain.shutdown(Duration::from_secs(1));
    e.shutdown(Duration::from_secs(1));
}

/// `Engine::add_service` / `remove_service` on a running two-core engine: listed, resolved,
/// a stale cached pick refreshed after `NotFound`, a call in flight on a removed service
/// answered.
pub fn services_added_and_removed_at_run_time(t: &Transport) {
    let (e, addr) = server(t, &["1.0.0"], 2);
    // An async method whose calls wait for a go-ahead, to remove its service mid-call.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (arrived_tx, arrived_rx) = mpsc::channel::<()>();
    let arrived_tx = std::sync::Mutex::new(arrived_tx);
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let slow = Service::new("slow", "1.0.0")
        .unwrap()
        .unary_deferred("wait", move |_, reply| {
            let _ = arrived_tx.lock().unwrap().send(());
            let rx = go_rx.clone();
            std::thread::spawn(move || {
                let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                reply.send(&b"done"[..]);
            });
        });
    e.add_service(slow.clone()).unwrap();
    assert!(e.add_service(slow).is_err(), "a duplicate is refused");
    let ch = e.client().connect(&addr).unwrap();
    assert_eq!(
        ch.call("calc@^1", "which", Bytes::new(), DL).unwrap(),
        b"1.0.0"
    );
    // Added: listed by `$sys`, resolved by a fresh connection.
    e.add_service(calc_at("1.1.0")).unwrap();
    let fresh = e.client().connect(&addr).unwrap();
    assert_eq!(fresh.resolve("calc@^1", DL).unwrap(), "calc@1.1.0");
    // The first connection's cached listing still picks 1.0.0, which is still served.
    assert_eq!(
        ch.call("calc@^1", "which", Bytes::new(), DL).unwrap(),
        b"1.0.0"
    );
    // Removed: its NotFound refreshes the cache and the call goes to 1.1.0.
    e.remove_service("calc@1.0.0").unwrap();
    assert_eq!(
        ch.call("calc@^1", "which", Bytes::new(), DL).unwrap(),
        b"1.1.0"
    );
    let err = ch
        .method("calc@1.0.0", "which")
        .call(Bytes::new(), DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    assert!(err.status().message.contains("versions 1.1.0"), "{err}");
    assert!(e.remove_service("calc@1.0.0").is_err(), "removed twice");
    assert!(e.remove_service("$sys@1.0.0").is_err(), "$sys stays");
    // A call in flight on a service removed meanwhile finishes normally.
    let slow_ch = ch.clone();
    let pending = std::thread::spawn(move || slow_ch.call("slow@1.0.0", "wait", Bytes::new(), DL));
    arrived_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the slow call never arrived");
    e.remove_service("slow@1.0.0").unwrap();
    go_tx.send(()).unwrap();
    let r = within("a call in flight on a removed service", move || {
        pending.join().unwrap()
    });
    assert_eq!(r.unwrap(), b"done", "{}", t.name);
    let err = ch.call("slow@1.0.0", "wait", Bytes::new(), DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    // A version added later: the cached listing keeps picking 1.1.0 until forgotten (by any
    // clone: they share it).
    e.add_service(calc_at("1.2.0")).unwrap();
    assert_eq!(
        ch.call("calc@^1", "which", Bytes::new(), DL).unwrap(),
        b"1.1.0"
    );
    ch.clone().forget_resolution();
    assert_eq!(
        ch.call("calc@^1", "which", Bytes::new(), DL).unwrap(),
        b"1.2.0"
    );
    drop((ch, fresh));
    e.shutdown(Duration::from_secs(1));
}

/// `Core::resolve` on a caller-driven core, and its own services changed at run time.
pub fn a_caller_driven_core_resolves_and_serves_changes(t: &Transport) {
    let (e, addr) = server(t, &["1.2.0", "1.3.0"], 1);
    let mut core = crate::new_core(t, CoreConfig::default()).expect("core");
    let ep = addr.parse().unwrap();
    let conn = core.connect(&ep, Duration::from_secs(5)).expect("connect");
    let svc = core.resolve(conn, "calc@~1.2", DL).unwrap();
    assert_eq!(svc, "calc@1.2.0");
    let mut slot = CallSlot::new();
    let got = core
        .call(conn, svc.as_bytes(), b"which", &[], DL, &mut slot)
        .unwrap();
    assert_eq!(got, b"1.2.0");
    let err = core.resolve(conn, "calc@2", DL).unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    assert!(err.status().message.contains("1.2.0, 1.3.0"), "{err}");
    // The caller-driven core's own services change too, and its `$sys` says so.
    core.add_service(calc_at("9.0.0")).unwrap();
    assert!(core.remove_service("calc@9.0.0").is_ok());
    assert!(core.remove_service("calc@9.0.0").is_err());
    core.close(conn);
    e.shutdown(Duration::from_secs(1));
}

/// A server handler resolves a requirement against its calling peer's `$sys` (the services
/// the connecting side registered) and calls back by requirement, mid-call; the listing is
/// kept for the connection across handler calls; a requirement the peer cannot satisfy
/// fails with `NotFound` naming the peer's versions.
pub fn a_handler_calls_its_peer_back_by_requirement(t: &Transport) {
    let desk = Service::new("desk", "1.0.0")
        .unwrap()
        .unary_async("ask", |req| {
            let peer = req.peer();
            let want = String::from_utf8_lossy(req.payload()).into_owned();
            async move {
                match peer.call_by(&want, "which", Bytes::new(), DL).await {
                    Ok(r) => Ok(Bytes::from(r)),
                    Err(e) => Err(e.status().clone()),
                }
            }
        });
    let (server, addr) = crate::engine(t, CoreConfig::default(), &[desk], "sys-peer");
    // The connecting side registers `calc` in three versions on its own engine.
    let client = crate::builder(t)
        .cores(1)
        .service(calc_at("1.0.0"))
        .service(calc_at("1.5.0"))
        .service(calc_at("2.0.0-beta.1"))
        .build()
        .unwrap();
    let ch = client.client().connect(&addr).unwrap();
    for (want, got) in [
        ("calc@^1", "1.5.0"),
        ("calc@~1.0", "1.0.0"),
        ("calc", "1.5.0"),
        ("calc@^2.0.0-beta", "2.0.0-beta.1"),
        ("calc@1.0.0", "1.0.0"),
    ] {
        let r = ch
            .call("desk@1.0.0", "ask", want.as_bytes().to_vec(), DL)
            .unwrap();
        assert_eq!(r, got.as_bytes(), "{}: {want}", t.name);
    }
    let err = ch
        .call("desk@1.0.0", "ask", &b"calc@^3"[..], DL)
        .unwrap_err();
    assert_eq!(err.code(), StatusCode::NotFound);
    assert!(
        err.status().message.contains("1.0.0, 1.5.0, 2.0.0-beta.1"),
        "{}: {err}",
        t.name
    );
    // The server's core kept the listing for the connection across handler calls: one
    // `$sys.list`, one refetch for the requirement nothing matched, and the 5 callbacks.
    assert_eq!(client.total_stats().calls_in(), 5 + 2, "{}", t.name);
    drop(ch);
    client.shutdown(Duration::from_secs(1));
    server.shutdown(Duration::from_secs(1));
}

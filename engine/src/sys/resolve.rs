//! Client-side resolution of `name@REQ` through the peer's `$sys.list` (docs/protocol.md
//! §25.3): one listing per connection, cached, refreshed after a `NotFound`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netron_codec::sys::{METHOD_LIST, SYS_SERVICE, ServiceId, ServiceReq, Version};
use rustc_hash::FxHashMap;

use crate::{CallError, CallSlot, Channel, ConnId, Core, Status, StatusCode};

/// The services a peer exposes, from one `$sys.list` reply.
#[derive(Debug)]
pub(crate) struct Listing {
    entries: Vec<(String, Version)>,
    /// The lister's capability word (docs/protocol.md §21; 0 if it did not say).
    features: u64,
}

impl Listing {
    /// Reads a `$sys.list` reply (verified).
    pub(crate) fn from_body(body: &[u8]) -> Result<Listing, Status> {
        let list = netron_codec::control::read_service_list(body).map_err(|e| {
            Status::new(
                StatusCode::Internal,
                format!("the peer's $sys.list reply is not a valid ServiceList: {e}"),
            )
        })?;
        let entries = list
            .services()
            .iter()
            .flat_map(|v| v.iter())
            .filter_map(|s| {
                let v = netron_codec::sys::parse_version(s.version().as_bytes()).ok()?;
                Some((s.name().to_owned(), v))
            })
            .collect();
        Ok(Listing {
            entries,
            features: list.features(),
        })
    }

    /// The exact `name@VERSION` for `req` (written `shown` by the caller), or `NotFound`
    /// naming the versions of that name that exist.
    pub(crate) fn pick(&self, req: &ServiceReq<'_>, shown: &str) -> Result<String, Status> {
        let versions = || {
            self.entries
                .iter()
                .filter(|(n, _)| n.as_bytes() == req.name)
        };
        let name = String::from_utf8_lossy(req.name);
        let shown = super::shown(shown.as_bytes());
        match netron_codec::sys::resolve(&req.req, versions().map(|(_, v)| v.clone())) {
            Some(v) => Ok(format!("{name}@{v}")),
            None => {
                let mut have: Vec<&Version> = versions().map(|(_, v)| v).collect();
                have.sort();
                let message = if have.is_empty() {
                    format!("no service matches {shown}: the peer exposes no service named {name}")
                } else {
                    format!(
                        "no service matches {shown}: the peer exposes {name} in versions {} \
                         (pre-releases match only a requirement that names one)",
                        super::join(have.iter().map(|v| v.to_string()))
                    )
                };
                Err(Status::new(StatusCode::NotFound, message))
            }
        }
    }
}

/// A connection's cached listing (a [`Channel`]'s, a [`crate::Peer`]'s).
#[derive(Debug, Default)]
pub(crate) struct Cache(Mutex<Option<Arc<Listing>>>);

impl Cache {
    fn get(&self) -> Option<Arc<Listing>> {
        self.0.lock().map_or(None, |g| g.clone())
    }
    fn set(&self, l: Arc<Listing>) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(l);
        }
    }
    fn clear(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
}

/// A caller-driven core's cached listings, by connection (slab key and generation).
pub(crate) type CoreCache = FxHashMap<(u32, u32), Arc<Listing>>;

/// Most peers' listings a core keeps for its handlers ([`PeerCache`]).
const PEER_CACHE_MAX: usize = 1024;

/// The listings of a core's peers, by connection (slab key and generation, so a reused
/// slot never sees its predecessor's), shared by the handlers' [`crate::Peer`]s. Bounded:
/// at [`PEER_CACHE_MAX`] entries it starts over (entries of closed connections go then).
#[derive(Debug, Default)]
pub(crate) struct PeerCache(Mutex<FxHashMap<(u32, u32), Arc<Listing>>>);

impl PeerCache {
    fn get(&self, conn: (u32, u32)) -> Option<Arc<Listing>> {
        self.0.lock().ok()?.get(&conn).cloned()
    }
    fn set(&self, conn: (u32, u32), l: Arc<Listing>) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= PEER_CACHE_MAX && !m.contains_key(&conn) {
                m.clear();
            }
            m.insert(conn, l);
        }
    }
    fn clear(&self, conn: (u32, u32)) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&conn);
        }
    }
}

/// What a service string is: an exact `name@VERSION` (sent as is) or a requirement to
/// resolve.
fn requirement(service: &str) -> Result<Option<ServiceReq<'_>>, CallError> {
    if ServiceId::parse(service.as_bytes()).is_ok() {
        return Ok(None);
    }
    ServiceReq::parse(service.as_bytes())
        .map(Some)
        .map_err(|e| {
            CallError::Refused(Status::invalid_argument(format!(
                "service {:?} is neither name@VERSION nor a requirement such as name@^1.2: {e}",
                super::shown(service.as_bytes())
            )))
        })
}

fn remaining(until: Option<Instant>) -> Option<Duration> {
    until.map(|u| u.saturating_duration_since(Instant::now()))
}

impl Channel {
    /// Resolves `requirement` (`name@^1.2`, `name@~1.2.3`, `name@1`, `name@>=1.2, <1.5`, or
    /// `name`: the newest release) to the exact `name@VERSION` to call: the highest version
    /// the peer exposes that satisfies it, by the `semver` crate's rules (a pre-release is
    /// picked only for a requirement that names a pre-release). An exact `name@VERSION`
    /// comes back unchanged, with no round trip.
    ///
    /// The peer's `$sys.list` is fetched once per connection (a blocking call within
    /// `deadline`) and cached; a requirement that no cached version satisfies refetches it
    /// once (services may have been added since), and so do [`Channel::call`] and
    /// [`Channel::call_with`] after a call to a resolved version gets `NotFound`.
    ///
    /// # Errors
    /// [`CallError::Refused`] (`InvalidArgument`) for a malformed requirement, naming the
    /// part; [`CallError::Status`] with `NotFound` naming the versions that exist when none
    /// matches; the errors of [`crate::Method::call`] for the `$sys.list` call.
    pub fn resolve(
        &self,
        requirement: &str,
        deadline: Option<Duration>,
    ) -> Result<String, CallError> {
        let Some(req) = self::requirement(requirement)? else {
            return Ok(requirement.to_owned());
        };
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        self.resolve_req(&req, requirement, until)
    }

    /// The peer's capability word as its `$sys` lists it (docs/protocol.md §21: the
    /// `netron_codec::features` bits it offers, e.g. `STREAMS`, `EVENTS`, `OFFERS_SYS`; 0 from
    /// a peer whose `$sys` does not say), from the cached listing or one `$sys.list` round
    /// trip within `deadline`.
    ///
    /// # Errors
    /// The errors of [`crate::Method::call`] for the `$sys.list` call; `Internal` if the reply
    /// is not a valid `ServiceList`.
    pub fn peer_features(&self, deadline: Option<Duration>) -> Result<u64, CallError> {
        let cache = self.sys_cache();
        if let Some(l) = cache.get() {
            return Ok(l.features);
        }
        let body = self
            .method(SYS_SERVICE, METHOD_LIST)
            .call(bytes::Bytes::new(), deadline)?;
        let l = Arc::new(Listing::from_body(&body).map_err(CallError::Status)?);
        cache.set(l.clone());
        Ok(l.features)
    }

    /// Forgets this channel's cached `$sys` listing: the next requirement is resolved from a
    /// fresh one (to pick up versions the peer added since; a call to a version removed since
    /// refetches by itself after its `NotFound`). Clones of the channel share the cache.
    pub fn forget_resolution(&self) {
        self.sys_cache().clear();
    }

    fn resolve_req(
        &self,
        req: &ServiceReq<'_>,
        shown: &str,
        until: Option<Instant>,
    ) -> Result<String, CallError> {
        let cache = self.sys_cache();
        if let Some(l) = cache.get() {
            if let Ok(s) = l.pick(req, shown) {
                return Ok(s);
            }
        }
        let body = self
            .method(SYS_SERVICE, METHOD_LIST)
            .call(bytes::Bytes::new(), remaining(until))?;
        let l = Arc::new(Listing::from_body(&body).map_err(CallError::Status)?);
        cache.set(l.clone());
        l.pick(req, shown).map_err(CallError::Status)
    }

    /// Runs `run` with `service` resolved; after a `NotFound` from the peer on a resolved
    /// version, refetches the listing and runs it once more if the pick changed.
    pub(crate) fn with_resolved<R>(
        &self,
        service: &str,
        deadline: Option<Duration>,
        fail: impl Fn(CallError) -> R,
        mut run: impl FnMut(&str, Option<Duration>) -> R,
        not_found: impl Fn(&R) -> bool,
    ) -> R {
        let req = match requirement(service) {
            Ok(None) => return run(service, deadline),
            Ok(Some(req)) => req,
            Err(e) => return fail(e),
        };
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        let first = match self.resolve_req(&req, service, until) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let r = run(&first, remaining(until));
        if !not_found(&r) {
            return r;
        }
        // The version went away (removed at run time): the listing is stale.
        self.sys_cache().clear();
        match self.resolve_req(&req, service, until) {
            Ok(s) if s != first => run(&s, remaining(until)),
            Ok(_) => r,
            Err(e) => fail(e),
        }
    }
}

impl Core {
    /// Resolves `requirement` against the `$sys` of the peer at the end of `conn` (see
    /// [`Channel::resolve`]; the listing is cached per connection on this core and refetched
    /// when no cached version matches). Drives the core (a blocking call) to fetch it.
    ///
    /// # Errors
    /// As [`Channel::resolve`], plus those of [`Core::call`].
    pub fn resolve(
        &mut self,
        conn: ConnId,
        requirement: &str,
        deadline: Option<Duration>,
    ) -> Result<String, CallError> {
        let Some(req) = self::requirement(requirement)? else {
            return Ok(requirement.to_owned());
        };
        let key = (conn.0.key, conn.0.generation);
        if let Some(Ok(s)) = self
            .sys_cache()
            .get(&key)
            .map(|l| l.pick(&req, requirement))
        {
            return Ok(s);
        }
        let mut slot = CallSlot::new();
        let body = self.call(
            conn,
            SYS_SERVICE.as_bytes(),
            METHOD_LIST.as_bytes(),
            &[],
            deadline,
            &mut slot,
        )?;
        let l = Arc::new(Listing::from_body(body).map_err(CallError::Status)?);
        let live = self.connection_keys();
        let cache = self.sys_cache();
        cache.retain(|k, _| live.contains(k));
        cache.insert(key, l.clone());
        l.pick(&req, requirement).map_err(CallError::Status)
    }

    /// Forgets the cached `$sys` listing of `conn` (after a call to a resolved version got
    /// `NotFound`, the next [`Core::resolve`] fetches a fresh one).
    pub fn forget_resolution(&mut self, conn: ConnId) {
        self.sys_cache().remove(&(conn.0.key, conn.0.generation));
    }
}

impl crate::Peer {
    /// Resolves `requirement` (as [`Channel::resolve`]) against the services this peer
    /// exposes on its side of the connection, through its `$sys` (fetched with
    /// [`crate::Peer::call_async`] within `deadline`, then kept for the connection by its
    /// core, for every handler's `Peer` of it; a requirement the kept listing cannot
    /// satisfy refetches it). Await it in an async handler.
    ///
    /// # Errors
    /// As [`Channel::resolve`]; `Unavailable` once the connection is closed.
    pub async fn resolve(
        &self,
        requirement: &str,
        deadline: Option<Duration>,
    ) -> Result<String, CallError> {
        let Some(req) = self::requirement(requirement)? else {
            return Ok(requirement.to_owned());
        };
        let cache = self
            .link()
            .map(|(inbox, c)| (inbox.clone(), (c.key, c.generation)));
        if let Some((inbox, conn)) = &cache {
            if let Some(Ok(s)) = inbox.peer_sys.get(*conn).map(|l| l.pick(&req, requirement)) {
                return Ok(s);
            }
        }
        let body = self
            .call_async(SYS_SERVICE, METHOD_LIST, bytes::Bytes::new(), deadline)
            .await?;
        let l = Arc::new(Listing::from_body(&body).map_err(CallError::Status)?);
        if let Some((inbox, conn)) = &cache {
            inbox.peer_sys.set(*conn, l.clone());
        }
        l.pick(&req, requirement).map_err(CallError::Status)
    }

    /// `service` for a stream opened into this peer (which cannot wait for a `$sys` round
    /// trip): an exact `name@VERSION` unchanged, or a requirement resolved from the listing
    /// this connection already fetched.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed requirement; `FailedPrecondition` when nothing was
    /// resolved on this connection yet (await [`crate::Peer::resolve`] first);
    /// `NotFound` when the kept listing has no version that matches.
    pub(crate) fn resolved_for_stream(&self, service: &str) -> Result<String, Status> {
        let Some(req) = requirement(service).map_err(|e| e.status().clone())? else {
            return Ok(service.to_owned());
        };
        let listing = self
            .link()
            .and_then(|(inbox, c)| inbox.peer_sys.get((c.key, c.generation)));
        match listing {
            Some(l) => l.pick(&req, service),
            None => Err(Status::new(
                StatusCode::FailedPrecondition,
                format!(
                    "a stream into a peer needs an exact name@VERSION or a requirement already \
                     resolved on its connection: await Peer::resolve(\"{service}\") first"
                ),
            )),
        }
    }

    /// Calls `method` of the peer's service that best satisfies `requirement` (`name@^1.2`,
    /// `name`, or an exact `name@VERSION`), without blocking: [`crate::Peer::resolve`], then
    /// [`crate::Peer::call_async`] within what is left of `deadline`. A `NotFound` from a
    /// resolved version (gone since it was listed) refetches the listing and calls again
    /// once if the pick changed.
    ///
    /// # Errors
    /// As [`crate::Peer::resolve`] and [`crate::Peer::call_async`].
    pub async fn call_by(
        &self,
        requirement: &str,
        method: &str,
        payload: impl Into<bytes::Bytes>,
        deadline: Option<Duration>,
    ) -> Result<Vec<u8>, CallError> {
        let until = deadline.and_then(|d| Instant::now().checked_add(d));
        let payload = payload.into();
        let exact = self::requirement(requirement)?.is_none();
        let first = self.resolve(requirement, deadline).await?;
        let r = self
            .call_async(&first, method, payload.clone(), remaining(until))
            .await;
        match r {
            Err(CallError::Status(s)) if !exact && s.code == StatusCode::NotFound => {
                if let Some((inbox, c)) = self.link() {
                    inbox.peer_sys.clear((c.key, c.generation));
                }
                let again = self.resolve(requirement, remaining(until)).await?;
                if again == first {
                    return Err(CallError::Status(s));
                }
                self.call_async(&again, method, payload, remaining(until))
                    .await
            }
            r => r,
        }
    }
}

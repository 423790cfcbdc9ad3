//! Engines: build (configure, listen, serve), query, connect, stop.

use std::ffi::{CString, c_char};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netron_engine::{Client, ConnectError, Engine, EngineBuilder, EngineError};

use crate::client::{CHANNELS, ntr_channel};
use crate::guard::{entry, non_null, str_arg, write};
use crate::handles::Table;
use crate::server::{SERVICES, ntr_service};
use crate::status::*;

/// An engine being configured (`ntr_engine_builder_new`); consumed by `ntr_engine_build`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_engine_builder {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

/// A running engine: its cores serve the registered services and carry its channels.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ntr_engine {
    /// Library-internal id; 0 is never valid.
    pub id: u64,
}

pub(crate) struct EngineCell {
    pub(crate) engine: Mutex<Option<Engine>>,
    client: Client,
    endpoints: Vec<CString>,
}

static BUILDERS: Table<EngineBuilder> = Table::new(3, "ntr_engine_builder");
pub(crate) static ENGINES: Table<Arc<EngineCell>> = Table::new(4, "ntr_engine");

fn engine_error(e: EngineError) -> Error {
    let status = match &e {
        EngineError::Endpoint(_) => NTR_INVALID_ENDPOINT,
        EngineError::Config(_) | EngineError::Service(_) => NTR_INVALID_CONFIG,
        _ => NTR_START_FAILED,
    };
    Error::new(status, e.to_string())
}

pub(crate) fn connect_error(e: ConnectError) -> Error {
    let status = match &e {
        ConnectError::Endpoint(_) => NTR_INVALID_ENDPOINT,
        ConnectError::OnCoreThread => NTR_FAILED_PRECONDITION,
        _ => NTR_CONNECT_FAILED,
    };
    Error::new(status, e.to_string())
}

/// A new engine builder with the defaults: as many cores as CPUs, no listener, no service.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_builder_new(out: *mut ntr_engine_builder) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let id = BUILDERS.insert(Engine::builder());
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_engine_builder { id }) }
    })
}

/// Sets the number of cores (threads) to `cores`, 1 to 1024 (checked by `ntr_engine_build`).
///
/// # Errors
/// `NTR_INVALID_HANDLE` for a builder that is not live.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_builder_cores(builder: ntr_engine_builder, cores: u32) -> ntr_status {
    entry(|| BUILDERS.with(builder.id, |b| *b = std::mem::take(b).cores(cores as usize)))
}

/// Sets the cores' idle policy: `NTR_IDLE_ADAPTIVE` (the default, `spin_us` 50) polls for
/// `spin_us` µs after the last piece of work, then parks; `NTR_IDLE_BUSY_POLL` never sleeps
/// (one CPU per core at 100 %, the lowest latency; `spin_us` is ignored). With `spin_us` 0
/// the cores park at once and write a connection's queued output every 2 KiB instead of once
/// per turn (early writes, docs/architecture.md).
///
/// # Errors
/// `NTR_INVALID_CONFIG` for an `idle` that is not an `NTR_IDLE_` value (the builder is left
/// as it was); `NTR_INVALID_HANDLE` for a builder that is not live.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_builder_idle(
    builder: ntr_engine_builder,
    idle: u32,
    spin_us: u64,
) -> ntr_status {
    entry(|| {
        let idle = crate::idle::policy(idle, spin_us)?;
        BUILDERS.with(builder.id, |b| *b = std::mem::take(b).idle(idle))
    })
}

/// Adds an endpoint to listen on: `tcp://127.0.0.1:7000` (port 0: the OS picks one, see
/// `ntr_engine_endpoint`), `unix:///path/to/socket`, `inproc://name`. Checked by
/// `ntr_engine_build`. The string is copied.
///
/// # Safety
/// `endpoint` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_builder_listen(
    builder: ntr_engine_builder,
    endpoint: *const c_char,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let ep = unsafe { str_arg(endpoint, "endpoint") }?;
        BUILDERS.with(builder.id, |b| *b = std::mem::take(b).listen(ep))
    })
}

/// Moves `service` into the builder: on success the service handle is consumed (invalid from
/// now on) and the engine will serve it; on failure it is left as it was.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_builder_service(
    builder: ntr_engine_builder,
    service: ntr_service,
) -> ntr_status {
    entry(|| {
        BUILDERS.with(builder.id, |_| ())?;
        let svc = SERVICES.remove(service.id)?;
        // A builder freed by another thread in between takes the service with it.
        BUILDERS.with(builder.id, |b| *b = std::mem::take(b).service(svc))
    })
}

/// Frees a builder that was not built (and the services moved into it).
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_builder_free(builder: ntr_engine_builder) -> ntr_status {
    entry(|| BUILDERS.remove(builder.id).map(drop))
}

/// Builds and starts the engine: its cores start, bind the endpoints and serve. The builder
/// is consumed whatever the outcome of the build; a NULL `out` is refused before that and
/// leaves the builder live.
///
/// # Errors
/// `NTR_INVALID_ENDPOINT`, `NTR_INVALID_CONFIG` (a setting, service name or duplicate: the text
/// names it), `NTR_START_FAILED` (io_uring unavailable, cannot listen...).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_build(
    builder: ntr_engine_builder,
    out: *mut ntr_engine,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let b = BUILDERS.remove(builder.id)?;
        let engine = b.build().map_err(engine_error)?;
        let endpoints = engine
            .endpoints()
            .iter()
            .map(|e| CString::new(e.to_string()).unwrap_or_default())
            .collect();
        let cell = EngineCell {
            client: engine.client(),
            engine: Mutex::new(Some(engine)),
            endpoints,
        };
        let id = ENGINES.insert(Arc::new(cell));
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_engine { id }) }
    })
}

/// Writes the number of endpoints the engine listens on to `*out`.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_endpoint_count(
    engine: ntr_engine,
    out: *mut usize,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let n = ENGINES.get(engine.id)?.endpoints.len();
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, n) }
    })
}

/// Writes endpoint `index` as bound (port 0 resolved: `tcp://127.0.0.1:41234`) to `*out`: a
/// NUL-terminated string owned by the engine, valid until the engine is freed.
///
/// # Errors
/// `NTR_INDEX_OUT_OF_RANGE` past the last endpoint.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_endpoint(
    engine: ntr_engine,
    index: usize,
    out: *mut *const c_char,
) -> ntr_status {
    entry(|| {
        non_null(out, "out")?;
        let cell = ENGINES.get(engine.id)?;
        let ep = cell.endpoints.get(index).ok_or_else(|| {
            Error::new(
                NTR_INDEX_OUT_OF_RANGE,
                format!(
                    "endpoint index {index} is past the engine's {} endpoints",
                    cell.endpoints.len()
                ),
            )
        })?;
        // The CString lives in the cell, which lives in the table until ntr_engine_free.
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ep.as_ptr()) }
    })
}

/// Connects to `endpoint` and completes the handshake (at most the engine's connect timeout,
/// 10 s by default), on one of this engine's cores. Blocks; must not be called from a handler
/// callback (`NTR_FAILED_PRECONDITION`). Free the channel with `ntr_channel_free`.
///
/// # Errors
/// `NTR_INVALID_ENDPOINT`, `NTR_CONNECT_FAILED` (refused, timed out, handshake refused; the
/// text says which), `NTR_FAILED_PRECONDITION`.
///
/// # Safety
/// `endpoint` is NULL or a NUL-terminated string; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_engine_connect(
    engine: ntr_engine,
    endpoint: *const c_char,
    out: *mut ntr_channel,
) -> ntr_status {
    entry(|| {
        // SAFETY: NULL or NUL-terminated (contract); used during this call only.
        let ep = unsafe { str_arg(endpoint, "endpoint") }?;
        non_null(out, "out")?;
        let client = ENGINES.get(engine.id)?.client.clone();
        let channel = client.connect(ep).map_err(connect_error)?;
        let id = CHANNELS.insert(channel);
        // SAFETY: not NULL (checked); valid for a write (contract).
        unsafe { write(out, ntr_channel { id }) }
    })
}

fn stop(engine: ntr_engine, drain: Option<Duration>) -> Result<(), Error> {
    let cell = ENGINES.remove(engine.id)?;
    let e = cell
        .engine
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match (e, drain) {
        (Some(e), Some(d)) => e.shutdown(d),
        (e, _) => drop(e),
    }
    Ok(())
}

/// Stops the engine gracefully and frees it: stops accepting, lets calls in flight finish for
/// up to `drain_ms` milliseconds (new calls get `NTR_UNAVAILABLE`), closes every connection,
/// and returns when every core has exited (called from a handler of this engine, on one of
/// its own cores, it cannot wait for itself: it starts the stop and returns at once, and the
/// cores exit after the handler returns). The services' `release` callbacks run. Channels
/// of this engine stay valid handles whose calls fail with `NTR_UNAVAILABLE`.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_shutdown(engine: ntr_engine, drain_ms: u64) -> ntr_status {
    entry(|| stop(engine, Some(Duration::from_millis(drain_ms))))
}

/// Stops the engine at once (calls in flight fail) and frees it; see `ntr_engine_shutdown`.
#[unsafe(no_mangle)]
pub extern "C" fn ntr_engine_free(engine: ntr_engine) -> ntr_status {
    entry(|| stop(engine, None))
}

//! The idle policy of a core made through the C ABI: what it does while it waits for work
//! (`ntr_core_new_with_idle`, `ntr_engine_builder_idle`).

use std::time::Duration;

use netron_engine::IdlePolicy;

use crate::status::*;

/// Poll for `spin_us` µs after the last piece of work, then park in the kernel until a
/// completion, a doorbell or a timer (the default: 50 µs). Saves a CPU when idle; a call that
/// waits longer than the spin pays a wake-up (~25–30 µs on a virtual machine) and starts on
/// cold caches.
pub const NTR_IDLE_ADAPTIVE: u32 = 0;
/// Never sleep: poll in a loop, reading busy connections with no ring receive. The lowest
/// latency and the least added per call; one CPU at 100 % for as long as the core lives.
/// `spin_us` is ignored.
pub const NTR_IDLE_BUSY_POLL: u32 = 1;

/// The Rust policy for a C `(idle, spin_us)` pair.
///
/// # Errors
/// `NTR_INVALID_CONFIG` naming `idle` when it is not an `NTR_IDLE_` value.
pub(crate) fn policy(idle: u32, spin_us: u64) -> Result<IdlePolicy, Error> {
    match idle {
        NTR_IDLE_ADAPTIVE => Ok(IdlePolicy::Adaptive {
            spin: Duration::from_micros(spin_us),
        }),
        NTR_IDLE_BUSY_POLL => Ok(IdlePolicy::BusyPoll),
        v => Err(Error::new(
            NTR_INVALID_CONFIG,
            format!(
                "idle {v} is not an NTR_IDLE_ value (NTR_IDLE_ADAPTIVE 0, NTR_IDLE_BUSY_POLL 1)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    /// Hot-connection promotions of the engine behind `e` (only busy-poll cores promote).
    fn engine_promotions(e: ntr_engine) -> u64 {
        let cell = crate::engine::ENGINES.get(e.id).expect("live engine");
        let guard = cell.engine.lock().unwrap();
        let engine = guard.as_ref().expect("not shut down");
        engine
            .stats()
            .iter()
            .map(|s| s.driver().hot_promotions)
            .sum()
    }

    /// Makes a C core with `make`, connects it to `ep`, calls `ok` 50 times and returns its
    /// hot-connection promotions.
    fn core_promotions(ep: &std::ffi::CStr, make: impl FnOnce(*mut ntr_core) -> ntr_status) -> u64 {
        let mut core = ntr_core { id: 0 };
        let mut conn = ntr_conn { id: 0 };
        assert_eq!(make(&mut core), NTR_OK);
        assert_eq!(
            // SAFETY: a NUL-terminated endpoint and a valid out-pointer to a local.
            unsafe { ntr_core_connect(core, ep.as_ptr(), 5000, &mut conn) },
            NTR_OK
        );
        let mut reply = ntr_buf {
            data: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        };
        for _ in 0..50 {
            // SAFETY: NUL-terminated names, a 3-byte request, a reply buffer zeroed or filled
            // by the library; on the thread that made the core.
            let st = unsafe {
                ntr_core_call(
                    core,
                    conn,
                    c"t@1.0.0".as_ptr(),
                    c"ok".as_ptr(),
                    b"abc".as_ptr(),
                    3,
                    5000,
                    &mut reply,
                )
            };
            assert_eq!(st, NTR_OK);
        }
        let hot = with_core_and_conn(core, conn, |c, _| c.stats().driver().hot_promotions)
            .expect("the core's handles");
        // SAFETY: filled by the library, unchanged since.
        assert_eq!(unsafe { ntr_buf_free(&mut reply) }, NTR_OK);
        assert_eq!(ntr_core_free(core), NTR_OK);
        hot
    }

    unsafe extern "C" fn echo(
        _user: *mut std::ffi::c_void,
        request: *const ntr_request,
        reply: ntr_reply,
    ) -> ntr_status {
        // SAFETY: valid during the callback (netron.h).
        let r = unsafe { &*request };
        // SAFETY: the request's bytes, valid during the callback.
        unsafe { ntr_reply_send(reply, r.data, r.len) }
    }

    #[test]
    fn the_chosen_policy_reaches_the_engine_and_the_core() {
        let mut b = ntr_engine_builder { id: 0 };
        // SAFETY: a valid out-pointer to a local.
        assert_eq!(unsafe { ntr_engine_builder_new(&mut b) }, NTR_OK);
        assert_eq!(ntr_engine_builder_cores(b, 1), NTR_OK);
        assert_eq!(ntr_engine_builder_idle(b, 5, 0), NTR_INVALID_CONFIG);
        assert_eq!(ntr_engine_builder_idle(b, NTR_IDLE_BUSY_POLL, 0), NTR_OK);
        let listen = c"tcp://127.0.0.1:0".as_ptr();
        // SAFETY: a NUL-terminated string.
        assert_eq!(unsafe { ntr_engine_builder_listen(b, listen) }, NTR_OK);
        let mut svc = ntr_service { id: 0 };
        // SAFETY: NUL-terminated strings and a valid out-pointer to a local.
        let st = unsafe { ntr_service_new(c"t".as_ptr(), c"1.0.0".as_ptr(), &mut svc) };
        assert_eq!(st, NTR_OK);
        // SAFETY: a NUL-terminated name; `echo` follows `ntr_handler`'s contract.
        let st = unsafe {
            ntr_service_unary(svc, c"ok".as_ptr(), Some(echo), std::ptr::null_mut(), None)
        };
        assert_eq!(st, NTR_OK);
        assert_eq!(ntr_engine_builder_service(b, svc), NTR_OK);
        let mut e = ntr_engine { id: 0 };
        // SAFETY: a live builder and a valid out-pointer.
        assert_eq!(unsafe { ntr_engine_build(b, &mut e) }, NTR_OK);
        let mut ep: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: a live engine and a valid out-pointer.
        assert_eq!(unsafe { ntr_engine_endpoint(e, 0, &mut ep) }, NTR_OK);
        // SAFETY: NUL-terminated, owned by the engine, which lives until the end.
        let ep = unsafe { std::ffi::CStr::from_ptr(ep) }.to_owned();

        // SAFETY: valid out-pointers (`core_promotions` passes one).
        let busy = core_promotions(&ep, |out| unsafe {
            ntr_core_new_with_idle(NTR_IDLE_BUSY_POLL, 0, out)
        });
        // SAFETY: as above.
        let adaptive = core_promotions(&ep, |out| unsafe { ntr_core_new(out) });
        // SAFETY: as above.
        let spun = core_promotions(&ep, |out| unsafe {
            ntr_core_new_with_idle(NTR_IDLE_ADAPTIVE, 200, out)
        });
        assert!(busy > 0, "a busy-poll core reads its connection directly");
        assert_eq!(
            (adaptive, spun),
            (0, 0),
            "adaptive cores keep the ring receive"
        );
        assert!(engine_promotions(e) > 0, "the engine's cores busy-poll");

        let mut core = ntr_core { id: 0 };
        let null = std::ptr::null_mut();
        // SAFETY: NULL is allowed (refused).
        let st = unsafe { ntr_core_new_with_idle(NTR_IDLE_BUSY_POLL, 0, null) };
        assert_eq!(st, NTR_NULL_ARGUMENT);
        // SAFETY: a valid out-pointer to a local.
        let st = unsafe { ntr_core_new_with_idle(2, 0, &mut core) };
        assert_eq!(st, NTR_INVALID_CONFIG);
        assert_eq!(core.id, 0, "nothing written on failure");
        assert_eq!(ntr_engine_shutdown(e, 0), NTR_OK);
    }

    #[test]
    fn each_value_maps_to_its_policy_and_others_are_refused_by_name() {
        assert_eq!(
            policy(NTR_IDLE_ADAPTIVE, 7).unwrap(),
            IdlePolicy::Adaptive {
                spin: Duration::from_micros(7)
            }
        );
        assert_eq!(policy(NTR_IDLE_BUSY_POLL, 7).unwrap(), IdlePolicy::BusyPoll);
        let e = policy(2, 0).unwrap_err();
        assert_eq!(e.status, NTR_INVALID_CONFIG);
        assert!(e.message.contains("NTR_IDLE_"), "{}", e.message);
    }
}

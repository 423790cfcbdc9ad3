//! [`Trace`]: a call log and per-method latency through `tracing`.

use crate::{After, Before, Interceptor, Status};

/// Emits one `tracing` event per call served, at its end, with target `netron::call`:
/// fields `service`, `method`, `id`, `latency_us` (from before the first interceptor to the
/// answer: install `Trace` first to time everything inside it) and `code` (`OK` or the
/// status code); successful calls at `INFO` level, failed ones at `WARN` with the status
/// message. A subscriber (e.g. `tracing-subscriber`) turns them into a log, or aggregates
/// `latency_us` per method into a histogram.
///
/// Cost: when no subscriber listens at that level, `tracing`'s cached interest check per
/// call, nothing else; when one does, what the subscriber does with the event.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trace;

impl Trace {
    /// The tracing target of the events.
    pub const TARGET: &'static str = "netron::call";

    /// A call log.
    pub fn new() -> Self {
        Trace
    }
}

fn text(b: Option<&[u8]>) -> &str {
    b.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("?")
}

impl Interceptor for Trace {
    fn before(&self, _call: &mut Before<'_>) -> Result<(), Status> {
        Ok(())
    }

    fn after(&self, call: &mut After<'_>) {
        let (service, method) = (text(call.service()), text(call.method()));
        let (id, latency_us) = (call.id(), call.elapsed_us());
        match call.outcome() {
            Ok(()) => tracing::info!(
                target: "netron::call",
                service,
                method,
                id,
                latency_us,
                code = "OK",
                "call served"
            ),
            Err(s) => tracing::warn!(
                target: "netron::call",
                service,
                method,
                id,
                latency_us,
                code = ?s.code,
                message = %s.message,
                "call failed"
            ),
        }
    }
}

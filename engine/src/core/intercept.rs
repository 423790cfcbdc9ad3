//! Client-side interceptors on a caller-driven core (docs/architecture.md, "Middleware").

use super::*;
use crate::{CallError, CallOptions, CallSlot};

impl Core {
    /// Runs `interceptor` around every call this core makes with [`Core::call`] and
    /// [`Core::call_with`] (see [`crate::ClientInterceptor`]: `before` hooks in installation
    /// order, `after` in reverse, on this thread). With none installed a call costs one
    /// emptiness check; with any, the reply is copied once for the `after` hooks and the
    /// request metadata is copied (the zero-allocation path is the one without).
    pub fn client_interceptor(&mut self, interceptor: impl crate::ClientInterceptor) {
        self.client_interceptors.push(Arc::new(interceptor));
    }

    /// [`Core::call_with`] inside the client interceptors.
    pub(super) fn call_intercepted<'s>(
        &mut self,
        conn: ConnId,
        (service, method): (&[u8], &[u8]),
        payload: &[u8],
        options: &CallOptions,
        slot: &'s mut CallSlot,
    ) -> Result<&'s [u8], CallError> {
        let chain = self.client_interceptors.clone();
        let (s, m) = (
            String::from_utf8_lossy(service),
            String::from_utf8_lossy(method),
        );
        let (opts, started) = chain.begin(&s, &m, options)?;
        opts.check().map_err(CallError::Refused)?;
        let metadata = Some(opts.get_metadata()).filter(|m| !m.is_empty());
        let mut result = self
            .call_inner(
                conn,
                (service, method),
                (payload, opts.get_deadline(), metadata, opts.is_idempotent()),
                slot,
            )
            .map(<[u8]>::to_vec);
        let empty = netron_codec::hpack::HeaderList::default();
        let response = slot.metadata().unwrap_or(&empty);
        chain.end(&s, &m, &mut result, response, started);
        match result {
            Ok(_) => slot.reply().unwrap_or_else(|| {
                Err(CallError::Status(Status::internal(
                    "call slot not completed",
                )))
            }),
            Err(e) => Err(e),
        }
    }
}

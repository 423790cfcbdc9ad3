//! Reading the rest of a large partial frame straight into its reassembly buffer.
//!
//! A frame longer than one receive arrives in pieces. Each piece is received into the core's
//! scratch buffer (`RuntimeConfig::recv_buffer_size`, 16 KiB by default) and copied onto the
//! frame's reassembly buffer ([`Connection::handle_input`]). Once that buffer holds the
//! frame's length prefix and has room for the whole frame (it is reserved at the declared
//! length, already checked against `max_frame_size`), a link that receives synchronously (a
//! hot connection's direct `recv(2)`) reads the frame's next bytes straight into that room
//! instead: one user-space copy less per byte, and one system call per socket buffer's worth
//! of data instead of one per 16 KiB. docs/architecture.md, "Hot connections".

use super::{Caller, ConnError, Connection, Env};

/// Frames shorter than this (bytes) keep the scratch path: a read there can bring many small
/// frames at once, where a read into one frame's room stops at that frame's end.
pub(crate) const DIRECT_MIN: usize = 4096;

impl<C: Caller> Connection<C> {
    /// The reassembly buffer of a partly received frame of at least [`DIRECT_MIN`] bytes whose
    /// whole declared length fits the buffer's capacity: a link may append the frame's next
    /// bytes to it (at most its spare capacity, never more: no allocation) and then must call
    /// [`Connection::handle_appended`]. `None` when no such frame is pending.
    pub(crate) fn pending_frame(&mut self) -> Option<&mut Vec<u8>> {
        if self.rx.len() < 4 || !self.is_open() || self.is_closing() || self.peer_eof {
            return None;
        }
        let declared = u32::from_le_bytes([self.rx[0], self.rx[1], self.rx[2], self.rx[3]]);
        let declared = declared as usize;
        (declared >= DIRECT_MIN && declared > self.rx.len() && self.rx.capacity() >= declared)
            .then_some(&mut self.rx)
    }

    /// Handles the `n` bytes a link appended to the buffer [`Connection::pending_frame`]
    /// returned, as [`Connection::handle_input`] would have handled them, without a copy.
    /// Same contract: on `Err` the connection is closing.
    pub(crate) fn handle_appended(&mut self, n: usize, env: &mut Env<'_>) -> Result<(), ConnError> {
        self.last_rx = env.now;
        self.ping_outstanding = None;
        env.stats.bytes_in += n as u64;
        let rx = std::mem::take(&mut self.rx);
        let result = self.process_reassembled(rx, env);
        if let Err(e) = &result {
            self.fail(e.clone(), env);
        }
        self.recharge();
        result
    }
}

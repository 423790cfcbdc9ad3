//! Size limits a decoder enforces and an encoder respects.

/// Limits for one connection, normally the negotiated values from the handshake
/// (see [`crate::handshake::Settings::limits`]).
///
/// `Default` gives the protocol defaults (docs/protocol.md, "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame, header included. Checked from the length field before the frame's bytes
    /// are awaited, so a lying length is rejected at once. Default 16 MiB.
    pub max_frame_size: u32,
    /// Most frames in one batch (record transports). Default 128.
    pub max_batch_frames: u32,
    /// A sender starts no new frame in a batch that already holds this many bytes, so only a
    /// batch's last frame may cross it. Default 64 KiB.
    pub max_batch_bytes: u32,
    /// Largest decoded header list (name + value + 32 per field). Default 16 KiB.
    pub max_header_list_size: u32,
    /// Largest decompressed payload. Default 16 MiB.
    pub max_decompressed_size: u32,
}

impl Limits {
    /// Smallest `max_frame_size` a peer may announce (1 KiB).
    pub const MIN_FRAME_SIZE: u32 = 1024;
    /// Smallest `max_batch_frames` a peer may announce (16): every batch costs the sender a
    /// write, so tiny batches would let a peer multiply the server's system calls (40x CPU
    /// for pipelined calls with a limit of 1). docs/protocol.md §17.
    pub const MIN_BATCH_FRAMES: u32 = 16;
    /// Smallest `max_batch_bytes` a peer may announce (16 KiB), for the same reason.
    pub const MIN_BATCH_BYTES: u32 = 16 << 10;
    /// Largest `max_frame_size` a peer may announce (1 GiB).
    pub const MAX_FRAME_SIZE: u32 = 1 << 30;

    /// Sets `max_frame_size`. Cost: a receiver may buffer up to this much per connection.
    pub fn with_max_frame_size(mut self, v: u32) -> Self {
        self.max_frame_size = v;
        self
    }
    /// Sets `max_batch_frames`.
    pub fn with_max_batch_frames(mut self, v: u32) -> Self {
        self.max_batch_frames = v;
        self
    }
    /// Sets `max_batch_bytes`. Larger batches mean fewer writes but more latency per flush.
    pub fn with_max_batch_bytes(mut self, v: u32) -> Self {
        self.max_batch_bytes = v;
        self
    }
    /// Sets `max_header_list_size`.
    pub fn with_max_header_list_size(mut self, v: u32) -> Self {
        self.max_header_list_size = v;
        self
    }
    /// Sets `max_decompressed_size`. A receiver may allocate up to this much per payload.
    pub fn with_max_decompressed_size(mut self, v: u32) -> Self {
        self.max_decompressed_size = v;
        self
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_batch_frames: 128,
            max_batch_bytes: 64 << 10,
            max_header_list_size: 16 << 10,
            max_decompressed_size: 16 << 20,
        }
    }
}

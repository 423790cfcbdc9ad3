//! Payload compression: negotiated, applied only above a threshold and only when it shrinks
//! the payload; decompression bounded by the negotiated limit.
//!
//! A compressed payload (flag COMPRESSED) is `u32` little-endian decompressed length, then the
//! algorithm's block: an LZ4 raw block (lz4_flex) or a Zstandard frame. The receiver checks
//! the declared length against `max_decompressed_size` *before* decompressing, decompresses
//! into a buffer of exactly that size, and fails if the output is shorter or the input
//! corrupt. A decompression bomb therefore costs at most the limit.

use crate::CompressionError;

/// Payload compression algorithms (wire values of the `Compression` enum in the schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum Compression {
    /// No compression.
    #[default]
    None = 0,
    /// LZ4 block format (fast, modest ratio).
    Lz4 = 1,
    /// Zstandard (better ratio, more CPU).
    Zstd = 2,
}

impl Compression {
    /// The algorithm for a wire value.
    pub fn from_u8(v: u8) -> Option<Compression> {
        match v {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Whether this build can (de)compress with the algorithm.
    pub fn is_available(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// The algorithms this build supports, most preferred first (what a Hello offers).
    pub fn supported() -> &'static [Compression] {
        #[cfg(all(feature = "lz4", feature = "zstd"))]
        return &[Compression::Lz4, Compression::Zstd];
        #[cfg(all(feature = "lz4", not(feature = "zstd")))]
        return &[Compression::Lz4];
        #[cfg(all(not(feature = "lz4"), feature = "zstd"))]
        return &[Compression::Zstd];
        #[cfg(not(any(feature = "lz4", feature = "zstd")))]
        return &[];
    }
}

/// Length of the decompressed-size prefix of a compressed payload.
pub const SIZE_PREFIX: usize = 4;

/// Compresses payloads for one connection direction. Holds the algorithm's reusable state,
/// so compressing allocates nothing beyond the output buffer's growth.
///
/// Incompressible data backs off: a payload that does not shrink makes the next attempts
/// skip compression (1 payload, then 2, 4, ... up to [`Compressor::MAX_BACKOFF`] after
/// failures in a row; any payload that shrinks resets it). A stream of encrypted or
/// already-compressed 64 KiB messages then costs an attempt every 64 messages instead of
/// every message (an LZ4 pass over 64 KiB that fails costs about as much as sending it),
/// while mixed traffic loses at most a few compressible payloads after an incompressible
/// one. docs/protocol.md §11.2 leaves when to compress to the sender.
pub struct Compressor {
    algo: Compression,
    threshold: usize,
    /// Payloads (at or above the threshold) still to send without trying.
    skip: u32,
    /// The current backoff: 0 after a success, else the skip set by the last failure.
    backoff: u32,
    #[cfg(feature = "zstd")]
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl core::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Compressor")
            .field("algo", &self.algo)
            .field("threshold", &self.threshold)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl Compressor {
    /// Default threshold: payloads below 1 KiB rarely shrink enough to pay for the CPU.
    pub const DEFAULT_THRESHOLD: usize = 1024;
    /// Default Zstandard level (fast).
    pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
    /// Most payloads skipped after incompressible ones in a row (see [`Compressor`]).
    pub const MAX_BACKOFF: u32 = 64;

    /// A compressor for `algo` that leaves payloads below `threshold` bytes alone.
    /// An algorithm not compiled in behaves as [`Compression::None`].
    pub fn new(algo: Compression, threshold: usize) -> Self {
        let algo = if algo.is_available() {
            algo
        } else {
            Compression::None
        };
        Self {
            algo,
            threshold,
            skip: 0,
            backoff: 0,
            #[cfg(feature = "zstd")]
            zstd: if algo == Compression::Zstd {
                zstd::bulk::Compressor::new(Self::DEFAULT_ZSTD_LEVEL).ok()
            } else {
                None
            },
        }
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Compression {
        self.algo
    }

    /// Appends the compressed form of `data` (size prefix + block) to `out` and returns `true`
    /// if compression is on, `data` reaches the threshold, no backoff is in force (see
    /// [`Compressor`]), and the result is smaller than `data`. Otherwise leaves `out`
    /// unchanged and returns `false`.
    pub fn compress_into(&mut self, data: &[u8], out: &mut (impl crate::OutBuf + ?Sized)) -> bool {
        if self.algo == Compression::None
            || data.len() < self.threshold
            || data.len() > u32::MAX as usize
        {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let start = out.len();
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let body = out.len();
        let written: Option<usize> = match self.algo {
            #[cfg(feature = "lz4")]
            Compression::Lz4 => {
                out.resize(
                    body + lz4_flex::block::get_maximum_output_size(data.len()),
                    0,
                );
                lz4_flex::block::compress_into(data, &mut out.as_mut_slice()[body..]).ok()
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd => match self.zstd.as_mut() {
                Some(z) => {
                    out.resize(body + zstd::zstd_safe::compress_bound(data.len()), 0);
                    z.compress_to_buffer(data, &mut out.as_mut_slice()[body..])
                        .ok()
                }
                None => None,
            },
            _ => None,
        };
        match written {
            Some(n) if SIZE_PREFIX + n < data.len() => {
                out.truncate(body + n);
                self.backoff = 0;
                true
            }
            _ => {
                out.truncate(start);
                self.backoff = (self.backoff * 2).clamp(1, Self::MAX_BACKOFF);
                self.skip = self.backoff;
                false
            }
        }
    }
}

/// Decompresses payloads for one connection direction, bounded by `max_decompressed_size`.
pub struct Decompressor {
    algo: Compression,
    max: u32,
    #[cfg(feature = "zstd")]
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl core::fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decompressor")
            .field("algo", &self.algo)
            .field("max", &self.max)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor for the negotiated `algo`, refusing payloads that declare more than
    /// `max_decompressed_size` bytes.
    pub fn new(algo: Compression, max_decompressed_size: u32) -> Self {
        Self {
            algo,
            max: max_decompressed_size,
            #[cfg(feature = "zstd")]
            zstd: if algo == Compression::Zstd {
                zstd::bulk::Decompressor::new().ok()
            } else {
                None
            },
        }
    }

    /// The decompressed size a compressed payload declares, checked against the limit.
    pub fn declared_size(&self, payload: &[u8]) -> Result<usize, CompressionError> {
        let prefix: [u8; 4] = payload
            .get(..SIZE_PREFIX)
            .and_then(|p| p.try_into().ok())
            .ok_or(CompressionError::Corrupt)?;
        let declared = u32::from_le_bytes(prefix);
        if declared > self.max {
            return Err(CompressionError::TooLarge {
                declared: declared as u64,
                max: self.max,
            });
        }
        Ok(declared as usize)
    }

    /// Decompresses a payload that carried the COMPRESSED flag, appending the result to `out`.
    /// `out` grows by at most the declared size, which is at most the limit.
    pub fn decompress_into(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressionError> {
        if self.algo == Compression::None || !self.algo.is_available() {
            return Err(CompressionError::Unsupported(self.algo));
        }
        let declared = self.declared_size(payload)?;
        let block = &payload[SIZE_PREFIX..];
        let start = out.len();
        out.resize(start + declared, 0);
        #[cfg(not(any(feature = "lz4", feature = "zstd")))]
        let _ = (block, start); // no algorithm in this build: unreachable after the check above
        let got: Option<usize> = match self.algo {
            #[cfg(feature = "lz4")]
            Compression::Lz4 => lz4_flex::block::decompress_into(block, &mut out[start..]).ok(),
            #[cfg(feature = "zstd")]
            Compression::Zstd => match self.zstd.as_mut() {
                Some(z) => z.decompress_to_buffer(block, &mut out[start..]).ok(),
                None => None,
            },
            _ => None,
        };
        if got == Some(declared) {
            Ok(())
        } else {
            out.truncate(start);
            Err(CompressionError::Corrupt)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compressible(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"netron-frame "[i % 13]).collect()
    }

    #[test]
    fn small_or_incompressible_payloads_stay_raw() {
        let mut c = Compressor::new(Compression::Lz4, 64);
        let mut out = Vec::new();
        assert!(!c.compress_into(&compressible(32), &mut out));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(!c.compress_into(&noise, &mut out));
        assert!(out.is_empty());
    }

    /// Incompressible payloads in a row back off 1, 2, 4, ... up to `MAX_BACKOFF` attempts;
    /// payloads skipped go raw (even compressible ones); a payload that shrinks resets it.
    /// For every algorithm compiled in.
    #[test]
    fn incompressible_payloads_back_off_and_a_success_resets() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut noise = || -> Vec<u8> {
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect()
        };
        for &algo in Compression::supported() {
            let mut c = Compressor::new(algo, 64);
            let mut out = Vec::new();
            // Each failure is followed by `skip` raw payloads, doubling up to the cap.
            let mut skips = Vec::new();
            for _ in 0..9 {
                assert!(
                    !c.compress_into(&noise(), &mut out),
                    "{algo:?}: an attempt fails"
                );
                let mut n = 0;
                while c.skip > 0 {
                    assert!(!c.compress_into(&compressible(4096), &mut out), "skipped");
                    n += 1;
                }
                skips.push(n);
            }
            assert_eq!(skips, [1, 2, 4, 8, 16, 32, 64, 64, 64], "{algo:?}");
            assert!(out.is_empty());
            // The next attempt succeeds and resets: the one after is tried at once.
            assert!(c.compress_into(&compressible(4096), &mut out), "{algo:?}");
            out.clear();
            assert!(!c.compress_into(&noise(), &mut out));
            assert_eq!(c.skip, 1, "{algo:?}: backoff restarted from 1");
        }
    }

    #[test]
    fn bombs_are_refused_before_decompressing() {
        for &algo in Compression::supported() {
            let mut c = Compressor::new(algo, 0);
            let mut out = Vec::new();
            assert!(c.compress_into(&vec![0u8; 1 << 20], &mut out), "{algo:?}");
            assert!(out.len() < 8 << 10);
            let mut d = Decompressor::new(algo, 64 << 10);
            let mut plain = Vec::new();
            assert_eq!(
                d.decompress_into(&out, &mut plain),
                Err(CompressionError::TooLarge {
                    declared: 1 << 20,
                    max: 64 << 10
                })
            );
            assert!(plain.capacity() < 64 << 10);
            // A lying prefix (smaller than the real size) is corrupt, not an overflow.
            out[..4].copy_from_slice(&1000u32.to_le_bytes());
            assert_eq!(
                d.decompress_into(&out, &mut plain),
                Err(CompressionError::Corrupt)
            );
            assert!(plain.is_empty());
        }
    }

    #[test]
    fn unnegotiated_algorithm_is_an_error() {
        let mut d = Decompressor::new(Compression::None, 1024);
        assert_eq!(
            d.decompress_into(&[0; 8], &mut Vec::new()),
            Err(CompressionError::Unsupported(Compression::None))
        );
        for &algo in Compression::supported() {
            let mut d = Decompressor::new(algo, 1024);
            assert_eq!(
                d.decompress_into(&[1, 0], &mut Vec::new()),
                Err(CompressionError::Corrupt)
            );
        }
    }

    /// In a build without an algorithm (`--no-default-features`), it is refused on both
    /// sides, never silently treated as another.
    #[test]
    fn algorithms_missing_from_this_build_are_unsupported() {
        for (algo, enabled) in [
            (Compression::Lz4, cfg!(feature = "lz4")),
            (Compression::Zstd, cfg!(feature = "zstd")),
        ] {
            assert_eq!(algo.is_available(), enabled);
            assert_eq!(Compression::supported().contains(&algo), enabled);
            if enabled {
                continue;
            }
            let mut out = Vec::new();
            assert!(!Compressor::new(algo, 0).compress_into(&[0; 4096], &mut out));
            assert!(out.is_empty());
            assert_eq!(
                Decompressor::new(algo, 1024).decompress_into(&[4, 0, 0, 0, 0], &mut out),
                Err(CompressionError::Unsupported(algo))
            );
        }
    }

    /// The algorithms this build has (None when it has neither, so the strategies stay valid).
    fn available() -> impl Strategy<Value = Compression> {
        let algos = Compression::supported();
        proptest::sample::select(if algos.is_empty() {
            &[Compression::None][..]
        } else {
            algos
        })
    }

    proptest! {
        #[test]
        fn round_trip(algo in available(),
                      data in prop_oneof![
                          proptest::collection::vec(any::<u8>(), 0..3000),
                          (0usize..20000).prop_map(compressible),
                      ]) {
            let mut c = Compressor::new(algo, 16);
            let mut out = vec![0xAA];
            let compressed = c.compress_into(&data, &mut out);
            if compressed {
                prop_assert!(out.len() - 1 < data.len());
                let mut d = Decompressor::new(algo, 1 << 20);
                let mut plain = vec![0xBB];
                d.decompress_into(&out[1..], &mut plain).unwrap();
                prop_assert_eq!(&plain[1..], &data[..]);
            } else {
                prop_assert_eq!(out, vec![0xAA]);
            }
        }

        #[test]
        fn garbage_never_panics(algo in available(),
                                data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decompressor::new(algo, 4096);
            let mut out = Vec::new();
            let _ = d.decompress_into(&data, &mut out);
            prop_assert!(out.len() <= 4096);
        }
    }
}

//! `ntr_buf`: a byte buffer owned by the library that a C caller reuses for replies.

use crate::status::ntr_status;

/// A growable byte buffer owned by libnetron, for reply payloads.
///
/// Start from all zeroes (`ntr_buf b = {0};`), pass it to calls again and again (its memory is
/// reused: no allocation once it is large enough), and release it with `ntr_buf_free`. C reads
/// `data[0..len]` and must not change any field: the library owns the memory.
#[repr(C)]
#[derive(Debug)]
pub struct ntr_buf {
    /// The bytes (NULL while nothing was ever allocated).
    pub data: *mut u8,
    /// Number of valid bytes at `data`.
    pub len: usize,
    /// Capacity of the allocation at `data` (library-internal).
    pub cap: usize,
}

/// Takes the vector out of `b`, leaving `b` empty.
///
/// # Safety
/// `b`'s fields are all zero, or were last written by this library (a vector's parts).
pub(crate) unsafe fn take(b: &mut ntr_buf) -> Vec<u8> {
    let v = if b.data.is_null() || b.cap == 0 {
        Vec::new()
    } else {
        // SAFETY: by the contract, these are the parts of a Vec<u8> that `put` leaked (C
        // does not change them).
        unsafe { Vec::from_raw_parts(b.data, b.len, b.cap) }
    };
    *b = ntr_buf {
        data: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    };
    v
}

/// Gives `v` to `b` (which `take` emptied).
pub(crate) fn put(b: &mut ntr_buf, v: Vec<u8>) {
    let mut v = std::mem::ManuallyDrop::new(v);
    *b = ntr_buf {
        data: v.as_mut_ptr(),
        len: v.len(),
        cap: v.capacity(),
    };
}

/// Replaces the contents of `b` with a copy of `bytes`: in place when its memory is large
/// enough (no allocation), else in a larger allocation that replaces it.
///
/// # Safety
/// As [`take`]: `b`'s fields are all zero or were last written by this library.
pub(crate) unsafe fn fill(b: &mut ntr_buf, bytes: &[u8]) {
    if !b.data.is_null() && b.cap >= bytes.len() {
        // SAFETY: `data` starts an allocation of `cap` >= `bytes.len()` bytes that this library
        // made and owns (the contract); `bytes` is memory of the core, never `b`'s, so the two
        // do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.data, bytes.len()) };
        b.len = bytes.len();
    } else {
        // SAFETY: as this function's contract.
        let mut v = unsafe { take(b) };
        v.clear();
        v.extend_from_slice(bytes);
        put(b, v);
    }
}

/// Frees the memory of `buf` and zeroes it (it may be used again). A zeroed buffer is fine.
///
/// # Safety
/// `buf` is NULL (an error) or points to an `ntr_buf` that is zeroed or was filled by this
/// library and not changed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ntr_buf_free(buf: *mut ntr_buf) -> ntr_status {
    crate::guard::entry(|| {
        crate::guard::non_null(buf, "buf")?;
        // SAFETY: not NULL, valid and exclusively ours for this call (contract).
        let b = unsafe { &mut *buf };
        // SAFETY: zeroed or filled by us (contract).
        drop(unsafe { take(b) });
        Ok(())
    })
}

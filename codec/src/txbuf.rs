//! Where frames are encoded: a growable heap buffer, or memory a transport lends (the reserved
//! free space of a shared-memory ring, docs/protocol.md §26.6), so a batch is written once, in
//! place, instead of into a `Vec` and then copied into the ring.
//!
//! [`OutBuf`] is the append-only byte sink every encoder of this crate writes into (HPACK and
//! QPACK header blocks, compressed payloads, prefix integers); [`TxBuf`] is the batch buffer
//! of a [`BatchEncoder`](crate::BatchEncoder). A lent `TxBuf` has a fixed capacity: an append
//! that would pass it moves the bytes written so far into a heap buffer once (a *spill*: one
//! allocation and one copy, for a frame larger than the lent space) and goes on there, so
//! encoding never fails for lack of lent room.

use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

/// An append-only byte buffer the encoders write into: `Vec<u8>` or [`TxBuf`].
///
/// Only what the encoders need: appending, zero-filled growth for codecs that write into a
/// sized slice (`resize`, then [`as_mut_slice`](OutBuf::as_mut_slice)), and truncation to
/// drop a partial write.
pub trait OutBuf {
    /// Bytes written.
    fn len(&self) -> usize;
    /// Whether nothing is written.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends one byte.
    fn push(&mut self, byte: u8);
    /// Appends `bytes`.
    fn extend_from_slice(&mut self, bytes: &[u8]);
    /// Grows (filling with `value`) or shrinks to `len` bytes.
    fn resize(&mut self, len: usize, value: u8);
    /// Shrinks to `len` bytes (no effect if already shorter).
    fn truncate(&mut self, len: usize);
    /// Reserves room for `additional` more bytes (a hint).
    fn reserve(&mut self, additional: usize);
    /// The bytes written.
    fn as_slice(&self) -> &[u8];
    /// The bytes written, mutable (to patch a length written earlier).
    fn as_mut_slice(&mut self) -> &mut [u8];
}

impl OutBuf for Vec<u8> {
    #[inline]
    fn len(&self) -> usize {
        Vec::len(self)
    }
    #[inline]
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
    #[inline]
    fn resize(&mut self, len: usize, value: u8) {
        Vec::resize(self, len, value);
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len);
    }
    #[inline]
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
    #[inline]
    fn as_slice(&self) -> &[u8] {
        self
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
}

/// What keeps lent memory mapped (a shared-memory segment's mapping, a heap ring).
pub type KeepAlive = Arc<dyn Any + Send + Sync>;

/// The batch buffer of a [`BatchEncoder`](crate::BatchEncoder): a heap `Vec<u8>`, or memory
/// lent by a transport ([`TxBuf::lent`]).
#[derive(Debug, Default)]
pub struct TxBuf {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Heap(Vec<u8>),
    Lent(Lent),
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Heap(Vec::new())
    }
}

/// Lent memory: `cap` bytes at `ptr`, `len` of them written.
struct Lent {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    /// A batch in this buffer counts as full from this many bytes on.
    batch_cap: usize,
    /// The lender's record layout: where the next record's payload starts, relative to the
    /// start of one holding `len` bytes (`None`: one record only, no split).
    span: Option<fn(usize) -> usize>,
    _keep: KeepAlive,
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("cap", &self.cap)
            .field("len", &self.len)
            .field("batch_cap", &self.batch_cap)
            .finish_non_exhaustive()
    }
}

// SAFETY: a `Lent` is the exclusive writer of its memory (`TxBuf::lent`'s contract), which
// `_keep` (`Send + Sync`) keeps alive wherever the `TxBuf` goes; it has no thread affinity.
#[allow(unsafe_code)]
unsafe impl Send for Lent {}

impl From<Vec<u8>> for TxBuf {
    fn from(v: Vec<u8>) -> Self {
        TxBuf {
            inner: Inner::Heap(v),
        }
    }
}

impl TxBuf {
    /// An empty heap buffer (allocates nothing until written).
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer over `cap` bytes of lent memory at `ptr`, empty. A batch encoded into it is
    /// full ([`BatchEncoder::is_full`](crate::BatchEncoder::is_full)) from `batch_cap` bytes
    /// on; an append past `cap` spills (see the module docs).
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `cap` bytes for as long as `keep` is alive,
    /// and nothing else may read or write those bytes until the returned buffer (and every
    /// buffer it is moved into) is dropped or has spilled: the lender hands the space to no
    /// one else and reads it only after taking the buffer back.
    #[allow(unsafe_code)]
    pub unsafe fn lent(ptr: NonNull<u8>, cap: usize, batch_cap: usize, keep: KeepAlive) -> Self {
        TxBuf {
            inner: Inner::Lent(Lent {
                ptr,
                cap,
                len: 0,
                batch_cap,
                span: None,
                _keep: keep,
            }),
        }
    }

    /// [`TxBuf::lent`] over space that can hold several records one after the other:
    /// [`TxBuf::split_batch`] cuts the bytes written off as one record and goes on in the
    /// rest. `span(len)` is where the next record's payload starts, relative to the start of
    /// one of `len` bytes (its length plus the lender's record header and alignment:
    /// `netron_shm::ring::lent_span`).
    ///
    /// # Safety
    /// As [`TxBuf::lent`]; and the lender must read the records back at exactly the offsets
    /// `span` gives.
    #[allow(unsafe_code)]
    pub unsafe fn lent_records(
        ptr: NonNull<u8>,
        cap: usize,
        batch_cap: usize,
        span: fn(usize) -> usize,
        keep: KeepAlive,
    ) -> Self {
        // SAFETY: the caller's contract is `lent`'s.
        let mut b = unsafe { TxBuf::lent(ptr, cap, batch_cap, keep) };
        if let Inner::Lent(l) = &mut b.inner {
            l.span = Some(span);
        }
        b
    }

    /// Cuts the bytes written off as a buffer of their own (one record of the lender) and
    /// goes on, empty, in the lent space after it, if at least `min` bytes of it are left
    /// for the next record's payload. `None` (and nothing changes) on the heap, for a buffer
    /// made by [`TxBuf::lent`], or with less room left.
    #[allow(unsafe_code)]
    pub fn split_batch(&mut self, min: usize) -> Option<TxBuf> {
        let Inner::Lent(l) = &mut self.inner else {
            return None;
        };
        let off = (l.span?)(l.len);
        if off < l.len || l.cap.checked_sub(off)? < min {
            return None;
        }
        let done = Lent {
            ptr: l.ptr,
            cap: l.len,
            len: l.len,
            batch_cap: l.batch_cap,
            span: None,
            _keep: Arc::clone(&l._keep),
        };
        // SAFETY: `off <= cap` (checked above), so the new start is inside the lent space
        // (or one past its end, with `cap` 0 left); the bytes before it stay with `done`,
        // the bytes after it with `l`: the two never overlap (`done.cap = len <= off`).
        l.ptr = unsafe { l.ptr.add(off) };
        l.cap -= off;
        l.len = 0;
        Some(TxBuf {
            inner: Inner::Lent(done),
        })
    }

    /// Bytes written.
    #[inline]
    pub fn len(&self) -> usize {
        OutBuf::len(self)
    }

    /// Whether nothing is written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        OutBuf::len(self) == 0
    }

    /// The bytes written.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        OutBuf::as_slice(self)
    }

    /// Whether the bytes are in lent memory (written in place, nothing to copy).
    #[inline]
    pub fn is_lent(&self) -> bool {
        matches!(self.inner, Inner::Lent(_))
    }

    /// The lent memory's start (`None` for a heap buffer): lets the lender check that a
    /// buffer handed back is the one it lent.
    pub fn lent_ptr(&self) -> Option<NonNull<u8>> {
        match &self.inner {
            Inner::Lent(l) => Some(l.ptr),
            Inner::Heap(_) => None,
        }
    }

    /// Bytes from which a batch in this buffer counts as full (`usize::MAX` on the heap).
    #[inline]
    pub fn batch_cap(&self) -> usize {
        match &self.inner {
            Inner::Lent(l) => l.batch_cap,
            Inner::Heap(_) => usize::MAX,
        }
    }

    /// Forgets the bytes written, keeping the memory (heap capacity, or the lent space).
    #[inline]
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The heap buffer, or (lent) a new `Vec` holding a copy of the bytes written.
    pub fn into_vec(self) -> Vec<u8> {
        match self.inner {
            Inner::Heap(v) => v,
            Inner::Lent(l) => l.written().to_vec(),
        }
    }

    /// Moves lent bytes to the heap with room for `additional` more (the spill: rare, so out
    /// of the appending paths); on the heap already, just the `Vec`.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, additional: usize) -> &mut Vec<u8> {
        if let Inner::Lent(l) = &self.inner {
            // What is written plus what is asked for; later appends grow the `Vec` as usual
            // (not a multiple of the lent space, which may be most of a large ring).
            let mut v = Vec::with_capacity(l.len + additional);
            v.extend_from_slice(l.written());
            self.inner = Inner::Heap(v);
        }
        match &mut self.inner {
            Inner::Heap(v) => v,
            Inner::Lent(_) => unreachable!("moved to the heap just above"),
        }
    }
}

#[allow(unsafe_code)]
impl Lent {
    #[inline]
    fn written(&self) -> &[u8] {
        // SAFETY: `len <= cap` (every write checks it) and the memory is valid and ours
        // (`TxBuf::lent`'s contract) while `self` holds `_keep`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    #[inline]
    fn written_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `written`; `&mut self` makes this the only reference handed out.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Appends `n` bytes (`len + n <= cap`, checked by the caller) and returns them.
    #[inline]
    fn grow(&mut self, n: usize) -> &mut [u8] {
        debug_assert!(self.len + n <= self.cap);
        let start = self.len;
        self.len += n;
        &mut self.written_mut()[start..]
    }
}

impl OutBuf for TxBuf {
    #[inline]
    fn len(&self) -> usize {
        match &self.inner {
            Inner::Heap(v) => v.len(),
            Inner::Lent(l) => l.len,
        }
    }
    #[inline]
    fn push(&mut self, byte: u8) {
        match &mut self.inner {
            Inner::Heap(v) => v.push(byte),
            Inner::Lent(l) if l.len < l.cap => l.grow(1)[0] = byte,
            Inner::Lent(_) => self.spill(1).push(byte),
        }
    }
    #[inline]
    fn extend_from_slice(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::Heap(v) => v.extend_from_slice(bytes),
            Inner::Lent(l) if bytes.len() <= l.cap - l.len => {
                l.grow(bytes.len()).copy_from_slice(bytes)
            }
            Inner::Lent(_) => self.spill(bytes.len()).extend_from_slice(bytes),
        }
    }
    fn resize(&mut self, len: usize, value: u8) {
        match &mut self.inner {
            Inner::Heap(v) => v.resize(len, value),
            Inner::Lent(l) if len <= l.len => l.len = len,
            Inner::Lent(l) if len <= l.cap => {
                let n = len - l.len;
                l.grow(n).fill(value);
            }
            Inner::Lent(l) => {
                let extra = len - l.len;
                self.spill(extra).resize(len, value);
            }
        }
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        match &mut self.inner {
            Inner::Heap(v) => v.truncate(len),
            Inner::Lent(l) => l.len = l.len.min(len),
        }
    }
    #[inline]
    fn reserve(&mut self, additional: usize) {
        if let Inner::Heap(v) = &mut self.inner {
            v.reserve(additional);
        }
    }
    #[inline]
    fn as_slice(&self) -> &[u8] {
        match &self.inner {
            Inner::Heap(v) => v,
            Inner::Lent(l) => l.written(),
        }
    }
    #[inline]
    fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.inner {
            Inner::Heap(v) => v,
            Inner::Lent(l) => l.written_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU8, Ordering};

    /// `cap` bytes of test memory (atomics: written through the lent pointer, read back
    /// afterwards through the slice, with no reference to the bytes in between).
    fn memory(cap: usize) -> (Arc<Vec<AtomicU8>>, NonNull<u8>) {
        let mem: Arc<Vec<AtomicU8>> = Arc::new((0..cap).map(|_| AtomicU8::new(0)).collect());
        let ptr = NonNull::new(mem.as_ptr().cast::<u8>().cast_mut()).unwrap();
        (mem, ptr)
    }

    fn bytes(mem: &[AtomicU8]) -> Vec<u8> {
        mem.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// A lent buffer over test memory (kept alive by the buffer).
    fn lent(cap: usize) -> (TxBuf, NonNull<u8>) {
        let (mem, ptr) = memory(cap);
        // SAFETY: the `cap` bytes live as long as `mem`, which the buffer keeps; the test
        // touches them only through the buffer.
        #[allow(unsafe_code)]
        let b = unsafe { TxBuf::lent(ptr, cap, cap / 2, mem) };
        (b, ptr)
    }

    #[test]
    fn writes_stay_in_lent_memory_until_they_do_not_fit() {
        let (mut b, ptr) = lent(8);
        b.extend_from_slice(b"abc");
        b.push(b'd');
        b.resize(6, b'z');
        b.as_mut_slice()[0] = b'A';
        assert!(b.is_lent());
        assert_eq!(b.lent_ptr(), Some(ptr));
        assert_eq!(b.as_slice(), b"Abcdzz");
        assert_eq!(b.batch_cap(), 4);
        b.truncate(5);
        b.extend_from_slice(b"xyz");
        assert!(b.is_lent(), "exactly full still fits");
        assert_eq!(b.as_slice(), b"Abcdzxyz");
        // One byte more spills to the heap with everything written so far.
        b.push(b'!');
        assert!(!b.is_lent());
        assert_eq!(b.lent_ptr(), None);
        assert_eq!(b.as_slice(), b"Abcdzxyz!");
        assert_eq!(b.batch_cap(), usize::MAX);
    }

    #[test]
    fn every_growing_write_spills_rather_than_overrun() {
        type Write = fn(&mut TxBuf);
        let writes: [Write; 3] = [
            |b| b.extend_from_slice(&[1; 5]),
            |b| b.resize(9, 2),
            |b| {
                for _ in 0..5 {
                    b.push(3);
                }
            },
        ];
        for w in writes {
            let (mut b, _) = lent(8);
            b.extend_from_slice(&[9; 4]);
            w(&mut b);
            assert!(!b.is_lent());
            assert_eq!(&b.as_slice()[..4], &[9; 4]);
            assert!(b.len() > 8);
        }
    }

    #[test]
    fn a_split_hands_the_batch_over_and_goes_on_after_the_next_record_header() {
        let (mem, ptr) = memory(64);
        let span: fn(usize) -> usize = |len| (len + 8 + 7) & !7;
        // SAFETY: as in `lent`.
        #[allow(unsafe_code)]
        let mut b = unsafe { TxBuf::lent_records(ptr, 64, 32, span, mem.clone()) };
        b.extend_from_slice(b"abc");
        let first = b.split_batch(8).unwrap();
        assert_eq!(first.as_slice(), b"abc");
        assert!(b.is_empty() && b.is_lent());
        // The next payload starts after a record of 3 bytes: 3 + 8 rounded up to 16.
        assert_eq!(
            b.lent_ptr().unwrap().as_ptr() as usize,
            ptr.as_ptr() as usize + 16
        );
        b.extend_from_slice(&[9; 40]);
        assert!(
            b.split_batch(8).is_none(),
            "no room left for another record"
        );
        drop(first);
        b.truncate(30);
        let second = b.split_batch(8).unwrap();
        assert_eq!(second.as_slice(), &[9; 30][..]);
        assert_eq!(b.len(), 0);
        assert!(
            b.split_batch(0).is_some(),
            "an empty batch needs only its header"
        );
        assert!(TxBuf::new().split_batch(0).is_none());
        drop((b, second));
        let written = bytes(&mem);
        assert_eq!(&written[..3], b"abc");
        assert_eq!(&written[16..46], &[9; 30][..]);
    }

    #[test]
    fn into_vec_copies_lent_bytes() {
        let (mut b, _) = lent(16);
        b.extend_from_slice(b"hello");
        assert_eq!(b.into_vec(), b"hello");
        let mut h = TxBuf::from(vec![1, 2]);
        h.push(3);
        assert_eq!(h.into_vec(), [1, 2, 3]);
    }
}

//! The epoll driver's receive buffers: the counterpart of the io_uring driver's provided-buffer
//! ring. A receive takes a free buffer, reads into it, and lends it to its owner until
//! [`Pool::recycle`]; with none free, the receive ends with `ENOBUFS`, as a multishot receive
//! does on an empty buffer ring.

/// `count` buffers of `size` bytes in one allocation, and the ids of the free ones.
pub(crate) struct Pool {
    mem: Box<[u8]>,
    size: usize,
    pub(super) free: Vec<u16>,
    /// Whether each buffer is free (guards against recycling one twice).
    is_free: Vec<bool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .field("count", &self.is_free.len())
            .field("free", &self.free.len())
            .finish()
    }
}

impl Pool {
    /// `count` buffers of `size` bytes (the core's `recv_buffers` × `recv_buffer_size`).
    pub(crate) fn new(count: u16, size: usize) -> Pool {
        Pool {
            mem: vec![0; count as usize * size].into_boxed_slice(),
            size,
            // Taken from the end: buffer 0 first.
            free: (0..count).rev().collect(),
            is_free: vec![true; count as usize],
        }
    }

    /// A free buffer's id, or `None` if all are lent out.
    pub(crate) fn take(&mut self) -> Option<u16> {
        let bid = self.free.pop()?;
        self.is_free[bid as usize] = false;
        Some(bid)
    }

    /// Buffer `bid`, whole, to read into (it must be taken).
    pub(crate) fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        let start = bid as usize * self.size;
        &mut self.mem[start..start + self.size]
    }

    /// The first `len` bytes of buffer `bid`; `None` for an id or length no receive produced.
    pub(crate) fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if self.is_free.get(bid as usize) != Some(&false) || len > self.size {
            return None;
        }
        let start = bid as usize * self.size;
        Some(&self.mem[start..start + len])
    }

    /// Gives buffer `bid` back (an unknown or already free id is ignored).
    pub(crate) fn recycle(&mut self, bid: u16) {
        if let Some(f) = self.is_free.get_mut(bid as usize) {
            if !*f {
                *f = true;
                self.free.push(bid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_lent_once_and_come_back_once() {
        let mut p = Pool::new(2, 8);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_ne!(a, b);
        assert_eq!(p.take(), None);
        p.buf_mut(a)[..3].copy_from_slice(b"abc");
        assert_eq!(p.get(a, 3), Some(&b"abc"[..]));
        assert_eq!(p.get(a, 9), None, "longer than a buffer");
        p.recycle(a);
        p.recycle(a); // twice: ignored
        assert_eq!(p.get(a, 1), None, "a free buffer is not readable");
        assert_eq!(p.take(), Some(a));
        assert_eq!(p.take(), None);
        p.recycle(99); // unknown: ignored
    }
}

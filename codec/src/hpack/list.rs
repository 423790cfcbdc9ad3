//! An owned, reusable list of decoded header fields.

/// Decoded header fields in arrival order, stored in one reusable byte buffer.
///
/// `clear()` keeps the capacity, so a connection that reuses one list allocates nothing in
/// steady state.
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    bytes: Vec<u8>,
    // (name start, name len, value len) into `bytes`; the value follows the name.
    fields: Vec<(u32, u32, u32)>,
    /// Non-zero: the list holds exactly what a decoder wrote under this stamp (unique in the
    /// process, from [`next_stamp`]); any change sets it to 0. A clone keeps it, with the
    /// same fields. See `HeaderDecoder::decode_into`.
    stamp: u64,
}

/// A process-wide unique, non-zero stamp.
fn next_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl HeaderList {
    /// Removes all fields, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.fields.clear();
        self.stamp = 0;
    }

    /// Marks the fields as a decoder's output and returns the new stamp.
    pub(crate) fn seal(&mut self) -> u64 {
        self.stamp = next_stamp();
        self.stamp
    }

    /// The stamp of the last [`Self::seal`], or 0 if the list changed since.
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Appends a field.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        self.stamp = 0;
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.fields
            .push((start, name.len() as u32, value.len() as u32));
    }

    /// Removes every field named `name` (the bytes stay in the buffer until [`Self::clear`]:
    /// no allocation, no copy).
    pub fn remove(&mut self, name: &[u8]) {
        self.stamp = 0;
        let bytes = &self.bytes;
        self.fields.retain(|&(start, n, _)| {
            let s = start as usize;
            &bytes[s..s + n as usize] != name
        });
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The `i`-th field.
    pub fn field(&self, i: usize) -> Option<(&[u8], &[u8])> {
        let &(s, n, v) = self.fields.get(i)?;
        let (s, n, v) = (s as usize, n as usize, v as usize);
        Some((&self.bytes[s..s + n], &self.bytes[s + n..s + n + v]))
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).filter_map(move |i| self.field(i))
    }

    /// The value of the first field named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The `:service` pseudo-header (`name@version`).
    pub fn service(&self) -> Option<&[u8]> {
        self.get(b":service")
    }

    /// The `:method` pseudo-header.
    pub fn method(&self) -> Option<&[u8]> {
        self.get(b":method")
    }

    /// The `:topic` pseudo-header.
    pub fn topic(&self) -> Option<&[u8]> {
        self.get(b":topic")
    }
}

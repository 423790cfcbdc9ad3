//! Header compression: an HPACK-style scheme (RFC 7541 representations, no Huffman) with a
//! Netron static table and a bounded dynamic table per connection and direction.
//!
//! `:service` (`name@version`), `:method`, `:topic` and metadata are sent literally once and
//! by a one-byte index after that. The normative description is docs/protocol.md, "Header
//! block".
//!
//! ```
//! use netron_codec::hpack::{Header, HeaderDecoder, HeaderEncoder, HeaderList};
//!
//! let mut enc = HeaderEncoder::new(4096);
//! let mut dec = HeaderDecoder::new(4096, 16 * 1024);
//! let fields = [Header::service(b"calc@1.2.0"), Header::method(b"add")];
//! let mut block = Vec::new();
//! enc.encode(&fields, &mut block).unwrap();
//! let mut list = HeaderList::default();
//! dec.decode_into(&block, &mut list).unwrap();
//! assert_eq!(list.get(b":service"), Some(&b"calc@1.2.0"[..]));
//!
//! // The second time, each field is one byte.
//! block.clear();
//! enc.encode(&fields, &mut block).unwrap();
//! assert_eq!(block.len(), 2);
//! ```

mod decoder;
mod encoder;
mod integer;
mod list;
pub(crate) mod static_table;
mod table;
mod trace;

pub use decoder::HeaderDecoder;
pub use encoder::{Header, HeaderEncoder, Indexing};
pub use list::HeaderList;
pub use static_table::{STATIC_LEN, STATIC_TABLE};
pub use table::ENTRY_OVERHEAD;

#[cfg(test)]
mod tests;

//! Who an operation's completions are for: the kind of operation as its owner sees it and the
//! owner's slot and generation. The driver stores the token with the operation and hands it
//! back with each completion, so a completion for a connection whose slot was recycled since
//! is recognised by its generation and ignored.

/// The owner's name for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// A listener's accept.
    Accept = 1,
    /// A connection's receive.
    Recv = 2,
    /// A connection's send.
    Send = 3,
    /// The inbox doorbell's eventfd read.
    Inbox = 4,
}

/// Owner of an operation: kind, slot key and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub op: Op,
    pub generation: u32,
    pub key: u32,
}

impl Token {
    pub(crate) fn new(op: Op, key: usize, generation: u32) -> Token {
        Token {
            op,
            generation,
            key: key as u32,
        }
    }
}

//! `user_data` of every submission: operation, connection slot and generation, so a stale
//! completion for a recycled slot is recognised and ignored.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Inbox = 4,
    Cancel = 5,
}

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
            generation: generation & 0x00ff_ffff,
            key: key as u32,
        }
    }

    pub(crate) fn encode(self) -> u64 {
        (self.op as u64) << 56 | (self.generation as u64 & 0x00ff_ffff) << 32 | self.key as u64
    }

    pub(crate) fn decode(v: u64) -> Option<Token> {
        let op = match (v >> 56) as u8 {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Inbox,
            5 => Op::Cancel,
            _ => return None,
        };
        Some(Token {
            op,
            generation: ((v >> 32) & 0x00ff_ffff) as u32,
            key: v as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for op in [Op::Accept, Op::Recv, Op::Send, Op::Inbox, Op::Cancel] {
            let t = Token::new(op, 123_456, 0x1ff_ffff);
            assert_eq!(
                Token::decode(t.encode()),
                Some(Token {
                    op,
                    generation: 0xff_ffff,
                    key: 123_456
                })
            );
        }
        assert_eq!(Token::decode(0), None);
    }
}

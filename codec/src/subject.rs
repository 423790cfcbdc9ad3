//! Event subjects and subscription patterns (docs/protocol.md §24.2), NATS-style.
//!
//! A *subject* (the `:topic` of an Event) is 1 to [`MAX_TOKENS`] non-empty *tokens* separated
//! by `.`, at most [`MAX_SUBJECT_LEN`] bytes in all; a token is printable ASCII (`0x21..=0x7e`)
//! other than `.`, `*` and `>`. A *pattern* (the `pattern` of a Subscribe) is a subject whose
//! tokens may also be the wildcards `*` (exactly one token) and, as the last token only, `>`
//! (one or more tokens). The syntax follows NATS subjects
//! (<https://docs.nats.io/nats-concepts/subjects>), restricted to ASCII.
//!
//! ```
//! use netron_codec::subject::{Pattern, Subject};
//!
//! let p = Pattern::parse(b"orders.*.created").unwrap();
//! assert!(p.matches(&Subject::parse(b"orders.eu.created").unwrap()));
//! assert!(!p.matches(&Subject::parse(b"orders.eu.paid").unwrap()));
//! let all = Pattern::parse(b"orders.>").unwrap();
//! assert!(all.matches(&Subject::parse(b"orders.eu").unwrap()));
//! assert!(!all.matches(&Subject::parse(b"orders").unwrap()));
//! assert!(Subject::parse(b"orders.*").is_err()); // wildcards only in patterns
//! ```

use crate::StatusCode;

/// Longest subject or pattern, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Most tokens in a subject or pattern.
pub const MAX_TOKENS: usize = 32;

/// A subject or pattern is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Empty input.
    #[error("empty subject")]
    Empty,
    /// More than [`MAX_SUBJECT_LEN`] bytes.
    #[error("subject of {0} bytes is longer than 256")]
    TooLong(usize),
    /// More than [`MAX_TOKENS`] tokens.
    #[error("subject has more than 32 tokens")]
    TooManyTokens,
    /// An empty token (leading, trailing or doubled `.`).
    #[error("empty token at byte {0}")]
    EmptyToken(usize),
    /// A byte outside printable ASCII, or a wildcard character inside a token.
    #[error("byte {byte:#04x} at {at} is not allowed in a token")]
    BadByte {
        /// The byte.
        byte: u8,
        /// Its offset.
        at: usize,
    },
    /// A wildcard in a subject (only patterns may hold them).
    #[error("wildcard in a subject (only subscription patterns may hold `*` and `>`)")]
    Wildcard,
    /// `>` before the last token of a pattern.
    #[error("`>` is only allowed as the last token")]
    TailNotLast,
}

impl SubjectError {
    /// A stable label for counters.
    pub fn counter(&self) -> &'static str {
        "bad_subject"
    }

    /// The status a receiver answers with: `InvalidArgument` (Error on the Subscribe; a
    /// published Event with a bad topic is dropped and counted instead).
    pub fn status(&self) -> StatusCode {
        StatusCode::InvalidArgument
    }
}

/// One pattern token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Literal(&'a [u8]),
    /// `*`
    One,
    /// `>`
    Tail,
}

fn tokens(input: &[u8], wildcards: bool) -> Result<usize, SubjectError> {
    if input.is_empty() {
        return Err(SubjectError::Empty);
    }
    if input.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong(input.len()));
    }
    let mut count = 0;
    let mut start = 0;
    for tok in input.split(|&b| b == b'.') {
        count += 1;
        if count > MAX_TOKENS {
            return Err(SubjectError::TooManyTokens);
        }
        if tok.is_empty() {
            return Err(SubjectError::EmptyToken(start));
        }
        let wild = tok == b"*" || tok == b">";
        if wild {
            if !wildcards {
                return Err(SubjectError::Wildcard);
            }
            if tok == b">" && start + 1 != input.len() {
                return Err(SubjectError::TailNotLast);
            }
        } else {
            for (i, &b) in tok.iter().enumerate() {
                if !(0x21..=0x7e).contains(&b) || b == b'*' || b == b'>' {
                    return Err(SubjectError::BadByte {
                        byte: b,
                        at: start + i,
                    });
                }
            }
        }
        start += tok.len() + 1;
    }
    Ok(count)
}

/// A validated subject (no wildcards), borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    bytes: &'a [u8],
}

impl<'a> Subject<'a> {
    /// Validates `bytes` as a subject.
    ///
    /// # Errors
    ///
    /// A [`SubjectError`] saying what is wrong (wildcards included).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SubjectError> {
        tokens(bytes, false)?;
        Ok(Self { bytes })
    }

    /// The subject's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Its tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.bytes.split(|&b| b == b'.')
    }
}

/// A validated subscription pattern, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl<'a> Pattern<'a> {
    /// Validates `bytes` as a pattern.
    ///
    /// # Errors
    ///
    /// A [`SubjectError`] saying what is wrong.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SubjectError> {
        let len = tokens(bytes, true)?;
        Ok(Self { bytes, len })
    }

    /// The pattern's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the pattern holds no wildcard (it matches exactly one subject).
    pub fn is_literal(&self) -> bool {
        self.toks().all(|t| matches!(t, Token::Literal(_)))
    }

    fn toks(&self) -> impl Iterator<Item = Token<'a>> + 'a {
        self.bytes.split(|&b| b == b'.').map(|t| match t {
            b"*" => Token::One,
            b">" => Token::Tail,
            t => Token::Literal(t),
        })
    }

    /// Whether `subject` matches: token by token, `*` matches any one token, a final `>` any
    /// one or more remaining tokens; otherwise tokens compare byte for byte.
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let mut subj = subject.tokens();
        for (i, t) in self.toks().enumerate() {
            match t {
                Token::Tail => {
                    debug_assert_eq!(i + 1, self.len);
                    return subj.next().is_some();
                }
                Token::One => {
                    if subj.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(l) => {
                    if subj.next() != Some(l) {
                        return false;
                    }
                }
            }
        }
        subj.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::parse(p.as_bytes())
            .unwrap()
            .matches(&Subject::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn nats_examples() {
        assert!(m("time.us.*", "time.us.east"));
        assert!(!m("time.us.*", "time.us.east.atlanta"));
        assert!(m("time.us.>", "time.us.east.atlanta"));
        assert!(!m("time.us.>", "time.us"));
        assert!(m("*.*.east.>", "time.us.east.atlanta"));
        assert!(m(">", "a"));
        assert!(m("a", "a"));
        assert!(!m("a", "a.b"));
        assert!(!m("a.b", "a"));
    }

    #[test]
    fn errors() {
        assert_eq!(Pattern::parse(b""), Err(SubjectError::Empty));
        assert_eq!(Pattern::parse(b"a..b"), Err(SubjectError::EmptyToken(2)));
        assert_eq!(Pattern::parse(b".a"), Err(SubjectError::EmptyToken(0)));
        assert_eq!(Pattern::parse(b"a."), Err(SubjectError::EmptyToken(2)));
        assert_eq!(Pattern::parse(b"a.>.b"), Err(SubjectError::TailNotLast));
        assert_eq!(
            Pattern::parse(b"a*"),
            Err(SubjectError::BadByte { byte: b'*', at: 1 })
        );
        assert_eq!(
            Pattern::parse(b"a b"),
            Err(SubjectError::BadByte { byte: b' ', at: 1 })
        );
        assert_eq!(Subject::parse(b"a.>"), Err(SubjectError::Wildcard));
        assert_eq!(
            Subject::parse(&[b'a'; 257]),
            Err(SubjectError::TooLong(257))
        );
        let many = vec!["a"; 33].join(".");
        assert_eq!(
            Subject::parse(many.as_bytes()),
            Err(SubjectError::TooManyTokens)
        );
        assert!(Subject::parse(vec!["a"; 32].join(".").as_bytes()).is_ok());
    }
}

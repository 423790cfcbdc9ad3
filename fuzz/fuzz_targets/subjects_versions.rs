//! The text parsers of events and `$sys`: subjects, patterns (split at the first 0x00:
//! pattern, then subject), service ids and version requirements (the whole input). No panic;
//! a valid subject is a literal pattern that matches itself; a literal pattern matches exactly
//! the equal subject; a parsed version prints back to its bytes; a resolved version satisfies
//! the requirement.
#![no_main]

use std::hint::black_box;

use libfuzzer_sys::fuzz_target;
use netron_codec::subject::{Pattern, Subject};
use netron_codec::sys::{ServiceId, ServiceReq, Version, parse_req, parse_version, resolve};

fuzz_target!(|data: &[u8]| {
    let (p, s) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let pattern = Pattern::parse(p);
    let subject = Subject::parse(s);
    if let Ok(subj) = subject {
        let own = Pattern::parse(s).expect("a subject is a pattern");
        assert!(own.is_literal());
        assert!(own.matches(&subj));
        black_box(subj.tokens().count());
    }
    match (pattern, subject) {
        (Ok(pat), Ok(subj)) => {
            let m = pat.matches(&subj);
            if pat.is_literal() {
                assert_eq!(m, p == s);
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            black_box((e.counter(), e.status(), e.to_string()));
        }
    }

    if let Ok(v) = parse_version(data) {
        assert_eq!(v.to_string().as_bytes(), data);
    }
    if let Ok(id) = ServiceId::parse(data) {
        black_box(id);
    }
    if let Ok(req) = ServiceReq::parse(data) {
        let vs = [
            Version::new(0, 0, 1),
            Version::new(0, 3, 0),
            Version::new(1, 2, 3),
            Version::new(1, 9, 0),
            Version::new(2, 0, 0),
        ];
        if let Some(best) = resolve(&req.req, vs.iter().cloned()) {
            assert!(req.req.matches(&best));
            assert!(vs.iter().all(|v| !req.req.matches(v) || *v <= best));
        }
    }
    let _ = parse_req(data);
});

//! Event subjects and patterns (docs/protocol.md §24.2) and `$sys` version requirements
//! (§25.3): parsers against independent models.

use netron_codec::subject::{MAX_SUBJECT_LEN, MAX_TOKENS, Pattern, Subject};
use netron_codec::sys::{ServiceId, ServiceReq, Version, parse_req, parse_version, resolve};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,6}"
}

fn subject() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(token(), 1..6)
}

/// A pattern derived from a subject: some tokens replaced by `*`, maybe a `>` tail.
fn pattern_for(s: &[String], stars: &[bool], tail: Option<usize>) -> Vec<String> {
    let mut p: Vec<String> = s
        .iter()
        .zip(stars.iter().chain(std::iter::repeat(&false)))
        .map(|(t, star)| if *star { "*".into() } else { t.clone() })
        .collect();
    if let Some(k) = tail {
        let k = k % p.len();
        p.truncate(k);
        p.push(">".into());
    }
    p
}

/// The model: NATS matching, token lists.
fn model_matches(p: &[String], s: &[String]) -> bool {
    match (p.first().map(String::as_str), s.first()) {
        (Some(">"), Some(_)) => true,
        (Some("*"), Some(_)) => model_matches(&p[1..], &s[1..]),
        (Some(t), Some(u)) => t == u && model_matches(&p[1..], &s[1..]),
        (None, None) => true,
        _ => false,
    }
}

proptest! {
    #[test]
    fn matching_agrees_with_the_model(
        s in subject(),
        other in subject(),
        stars in prop::collection::vec(any::<bool>(), 0..6),
        tail in prop::option::of(any::<usize>()),
    ) {
        let p = pattern_for(&s, &stars, tail);
        let pj = p.join(".");
        let pat = Pattern::parse(pj.as_bytes()).unwrap();
        for subj in [&s, &other] {
            let sj = subj.join(".");
            let parsed = Subject::parse(sj.as_bytes()).unwrap();
            prop_assert_eq!(pat.matches(&parsed), model_matches(&p, subj), "{} vs {}", pj, sj);
        }
        // A pattern built from a subject always matches it.
        prop_assert!(pat.matches(&Subject::parse(s.join(".").as_bytes()).unwrap()));
    }

    /// Arbitrary bytes: parsing never panics, and what parses obeys the syntax.
    #[test]
    fn parsing_is_total(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = Pattern::parse(&bytes) {
            prop_assert!(!bytes.is_empty() && bytes.len() <= MAX_SUBJECT_LEN);
            let toks: Vec<&[u8]> = bytes.split(|&b| b == b'.').collect();
            prop_assert!(toks.len() <= MAX_TOKENS);
            for (i, t) in toks.iter().enumerate() {
                prop_assert!(!t.is_empty());
                prop_assert!(*t != b">" || i + 1 == toks.len());
                prop_assert!(t.iter().all(|b| (0x21..=0x7e).contains(b)));
            }
            prop_assert_eq!(Subject::parse(&bytes).is_ok(), p.is_literal());
        } else {
            prop_assert!(Subject::parse(&bytes).is_err());
        }
    }

    /// Version requirements: `^` and `~` against a direct model of Cargo's ranges; resolution
    /// picks the highest match.
    #[test]
    fn requirements_match_the_cargo_model(
        major in 0u64..3, minor in 0u64..3, patch in 0u64..3,
        parts in 1usize..=3,
        op in prop::sample::select(vec!["^", "~", "=", ""]),
        candidates in prop::collection::vec((0u64..3, 0u64..3, 0u64..3), 0..12),
    ) {
        let given = [major, minor, patch];
        let text = format!("{op}{}", given[..parts].iter().map(u64::to_string).collect::<Vec<_>>().join("."));
        let req = parse_req(text.as_bytes()).unwrap();
        let lower = Version::new(major, if parts > 1 { minor } else { 0 }, if parts > 2 { patch } else { 0 });
        let model = |v: &Version| -> bool {
            match op {
                "=" => v.major == major && (parts < 2 || v.minor == minor) && (parts < 3 || v.patch == patch),
                "~" => *v >= lower && v.major == major && (parts < 2 || v.minor == minor),
                _ => {
                    // Caret: below the next increment of the left-most non-zero given part.
                    let upper = if major > 0 || parts == 1 {
                        Version::new(major + 1, 0, 0)
                    } else if minor > 0 || parts == 2 {
                        Version::new(0, minor + 1, 0)
                    } else {
                        Version::new(0, 0, patch + 1)
                    };
                    *v >= lower && *v < upper
                }
            }
        };
        let vs: Vec<Version> = candidates.iter().map(|&(a, b, c)| Version::new(a, b, c)).collect();
        for v in &vs {
            prop_assert_eq!(req.matches(v), model(v), "{} vs {}", text, v);
        }
        let best = resolve(&req, vs.iter().cloned());
        prop_assert_eq!(best, vs.iter().filter(|v| model(v)).max().cloned());
        let id = format!("calc@{lower}");
        prop_assert_eq!(ServiceId::parse(id.as_bytes()).unwrap().version, lower);
        let r = format!("calc@{text}");
        prop_assert_eq!(ServiceReq::parse(r.as_bytes()).unwrap().req, req);
    }

    #[test]
    fn version_parsing_is_total(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        let _ = parse_req(&bytes);
        let _ = ServiceReq::parse(&bytes);
        if let Ok(v) = parse_version(&bytes) {
            let text = v.to_string();
            prop_assert_eq!(text.as_bytes(), &bytes[..]);
        }
    }
}

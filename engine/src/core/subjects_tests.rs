//! The subject index against a reference matcher written from the NATS rules alone.

use super::*;
use proptest::prelude::*;

/// NATS matching, token lists compared recursively (the reference).
fn reference(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (Some((&">", [])), Some(_)) => true,
        (Some((&"*", p)), Some((_, s))) => reference(p, s),
        (Some((l, p)), Some((t, s))) => l == t && reference(p, s),
        (None, None) => true,
        _ => false,
    }
}

fn conn(id: u32) -> Target {
    Target::Conn { key: 1, id }
}

fn ids(ix: &SubjectIndex, out: &[usize]) -> Vec<u32> {
    let mut v: Vec<u32> = out
        .iter()
        .map(|&e| match ix.target(e) {
            Some(Target::Conn { id, .. }) => *id,
            _ => u32::MAX,
        })
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn edge_cases() {
    let mut ix = SubjectIndex::default();
    for (i, p) in ["a.>", ">", "a.*", "*.*", "a", "a.b.>", "*"]
        .iter()
        .enumerate()
    {
        ix.insert(p.as_bytes(), None, conn(i as u32)).unwrap();
    }
    let mut out = Vec::new();
    ix.matches(b"a", &mut out, &mut Vec::new());
    assert_eq!(ids(&ix, &out), vec![1, 4, 6], "`a.>` needs one more token");
    ix.matches(b"a.b", &mut out, &mut Vec::new());
    assert_eq!(ids(&ix, &out), vec![0, 1, 2, 3]);
    ix.matches(b"a.b.c", &mut out, &mut Vec::new());
    assert_eq!(ids(&ix, &out), vec![0, 1, 5]);
    // Empty tokens and misplaced wildcards are refused, nothing is indexed.
    for bad in ["", "a..b", ".a", "a.", "a.>.b", "a*", "a b"] {
        assert!(
            ix.insert(bad.as_bytes(), None, conn(99)).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(ix.len(), 7);
}

#[test]
fn removal_frees_nodes_and_entries() {
    let mut ix = SubjectIndex::default();
    for i in 0..100u32 {
        let p = format!("a.{i}.*.>");
        ix.insert(p.as_bytes(), None, Target::Conn { key: i % 3, id: i })
            .unwrap();
    }
    ix.insert(b"a.1.x.y", None, Target::Conn { key: 7, id: 1 })
        .unwrap();
    for k in 0..3 {
        ix.remove_conn(k);
    }
    ix.remove_conn_sub(7, 1);
    assert_eq!(ix.len(), 0);
    assert_eq!(ix.nodes.len(), 1, "only the root is left");
}

#[test]
fn queue_groups_keep_one_member_in_turn() {
    let mut ix = SubjectIndex::default();
    for id in 0..3 {
        ix.insert(b"jobs.*", Some(b"workers"), conn(id)).unwrap();
    }
    ix.insert(b"jobs.>", None, conn(10)).unwrap();
    let mut out = Vec::new();
    let mut seen = [0u32; 3];
    for _ in 0..30 {
        ix.matches(b"jobs.x", &mut out, &mut Vec::new());
        let got = ids(&ix, &out);
        assert_eq!(
            got.len(),
            2,
            "one group member and the plain subscriber: {got:?}"
        );
        assert_eq!(got[1], 10);
        seen[got[0] as usize] += 1;
    }
    assert_eq!(seen, [10, 10, 10], "round-robin over the members");
}

fn token() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c")]
}

fn pattern_token() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("*")]
}

proptest! {
    #[test]
    fn index_agrees_with_the_reference(
        patterns in prop::collection::vec(
            (prop::collection::vec(pattern_token(), 1..4), any::<bool>()), 1..12),
        subjects in prop::collection::vec(prop::collection::vec(token(), 1..5), 1..12),
        removed in prop::collection::vec(any::<bool>(), 12),
        closed in 0u32..4,
    ) {
        let mut ix = SubjectIndex::default();
        let mut pats: Vec<Vec<&str>> = Vec::new();
        for (i, (toks, tail)) in patterns.iter().enumerate() {
            let mut p = toks.clone();
            if *tail { p.push(">"); }
            // Three connections, several subscriptions each, often at the same node.
            let target = Target::Conn { key: i as u32 % 3, id: i as u32 };
            ix.insert(p.join(".").as_bytes(), None, target).unwrap();
            pats.push(p);
        }
        for (i, r) in removed.iter().enumerate().take(pats.len()) {
            if *r { ix.remove_conn_sub(i as u32 % 3, i as u32); }
        }
        // A connection closes (key 3: one that holds nothing).
        ix.remove_conn(closed);
        let mut out = Vec::new();
        for s in &subjects {
            ix.matches(s.join(".").as_bytes(), &mut out, &mut Vec::new());
            let want: Vec<u32> = pats.iter().enumerate()
                .filter(|(i, p)| !removed[*i] && *i as u32 % 3 != closed && reference(p, s))
                .map(|(i, _)| i as u32).collect();
            prop_assert_eq!(ids(&ix, &out), want, "subject {:?}", s.join("."));
        }
        let left = pats.len() - (0..pats.len()).filter(|&i| removed[i] || i as u32 % 3 == closed).count();
        prop_assert_eq!(ix.len(), left);
    }
}

#[test]
fn a_group_served_by_an_earlier_core_is_skipped() {
    let mut ix = SubjectIndex::default();
    ix.insert(b"jobs.*", Some(b"workers"), conn(1)).unwrap();
    ix.insert(b"jobs.*", None, conn(2)).unwrap();
    let mut out = Vec::new();
    let mut served: Vec<Box<[u8]>> = vec![b"workers"[..].into()];
    ix.matches(b"jobs.x", &mut out, &mut served);
    assert_eq!(ids(&ix, &out), vec![2]);
    let mut served = Vec::new();
    ix.matches(b"jobs.x", &mut out, &mut served);
    assert_eq!(ids(&ix, &out), vec![1, 2]);
    assert_eq!(served, vec![Box::<[u8]>::from(&b"workers"[..])]);
}

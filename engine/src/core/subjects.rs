//! A core's subject index (docs/architecture.md "Events"): every subscription held at this
//! core (by a peer's connection, or in-process), found by the subjects its pattern matches.
//!
//! A trie over pattern tokens: each node has its literal children, one child for `*`, the
//! subscriptions whose pattern ends there, and those whose pattern ends with `>` there.
//! Matching a subject walks its tokens, following the literal child and the `*` child at
//! each step and collecting the `>` subscriptions on the way: cost grows with the subject's
//! tokens and the wildcards on the path, not with the number of subscriptions. Nodes are
//! freed when their last subscription goes, so churn does not grow the index.

use std::sync::Arc;

use netron_codec::subject::{MAX_TOKENS, Pattern, SubjectError};
use rustc_hash::FxHashMap;
use slab::Slab;

use crate::events::{SlowPolicy, SubShared};

/// Who gets a matching event.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Subscription `id` that the peer of connection `key` holds here.
    Conn { key: u32, id: u32 },
    /// An in-process subscription.
    Local {
        key: u64,
        sub: Arc<SubShared>,
        policy: SlowPolicy,
    },
}

#[derive(Debug)]
struct Entry {
    pattern: Box<[u8]>,
    group: Option<Box<[u8]>>,
    target: Target,
}

#[derive(Debug, Default)]
struct Node {
    lit: FxHashMap<Box<[u8]>, usize>,
    star: Option<usize>,
    here: Vec<usize>,
    tail: Vec<usize>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.lit.is_empty() && self.star.is_none() && self.here.is_empty() && self.tail.is_empty()
    }
}

/// The index (see the module docs).
#[derive(Debug)]
pub(crate) struct SubjectIndex {
    entries: Slab<Entry>,
    nodes: Slab<Node>,
    root: usize,
    by_conn: FxHashMap<(u32, u32), usize>,
    by_local: FxHashMap<u64, usize>,
    /// Round-robin position for queue groups.
    turn: u32,
}

impl Default for SubjectIndex {
    fn default() -> Self {
        let mut nodes = Slab::new();
        let root = nodes.insert(Node::default());
        SubjectIndex {
            entries: Slab::new(),
            nodes,
            root,
            by_conn: FxHashMap::default(),
            by_local: FxHashMap::default(),
            turn: 0,
        }
    }
}

impl SubjectIndex {
    /// Subscriptions in the index.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// In-process subscriptions in the index.
    pub(crate) fn local_count(&self) -> usize {
        self.by_local.len()
    }

    /// Adds a subscription; returns its entry key.
    ///
    /// # Errors
    /// The pattern is invalid (docs/protocol.md §24.2).
    pub(crate) fn insert(
        &mut self,
        pattern: &[u8],
        group: Option<&[u8]>,
        target: Target,
    ) -> Result<usize, SubjectError> {
        Pattern::parse(pattern)?;
        let mut node = self.root;
        let mut toks = pattern.split(|&b| b == b'.').peekable();
        let mut tail = false;
        while let Some(t) = toks.next() {
            if t == b">" && toks.peek().is_none() {
                tail = true;
                break;
            }
            node = if t == b"*" {
                match self.nodes[node].star {
                    Some(c) => c,
                    None => {
                        let c = self.nodes.insert(Node::default());
                        self.nodes[node].star = Some(c);
                        c
                    }
                }
            } else {
                match self.nodes[node].lit.get(t) {
                    Some(&c) => c,
                    None => {
                        let c = self.nodes.insert(Node::default());
                        self.nodes[node].lit.insert(t.into(), c);
                        c
                    }
                }
            };
        }
        let key = match &target {
            Target::Conn { key, id } => (Some((*key, *id)), None),
            Target::Local { key, .. } => (None, Some(*key)),
        };
        let e = self.entries.insert(Entry {
            pattern: pattern.into(),
            group: group.map(Into::into),
            target,
        });
        if tail {
            self.nodes[node].tail.push(e);
        } else {
            self.nodes[node].here.push(e);
        }
        match key {
            (Some(k), _) => {
                if let Some(old) = self.by_conn.insert(k, e) {
                    self.remove_entry(old);
                    self.by_conn.insert(k, e);
                }
            }
            (_, Some(k)) => {
                if let Some(old) = self.by_local.insert(k, e) {
                    self.remove_entry(old);
                    self.by_local.insert(k, e);
                }
            }
            _ => {}
        }
        Ok(e)
    }

    /// Removes subscription `id` of connection `key`.
    pub(crate) fn remove_conn_sub(&mut self, key: u32, id: u32) {
        if let Some(e) = self.by_conn.remove(&(key, id)) {
            self.remove_entry(e);
        }
    }

    /// Removes every subscription of connection `key` (it closed).
    pub(crate) fn remove_conn(&mut self, key: u32) {
        let gone: Vec<(u32, u32)> = self
            .by_conn
            .keys()
            .filter(|(k, _)| *k == key)
            .copied()
            .collect();
        for k in gone {
            self.remove_conn_sub(k.0, k.1);
        }
    }

    /// Removes in-process subscription `key`.
    pub(crate) fn remove_local(&mut self, key: u64) {
        if let Some(e) = self.by_local.remove(&key) {
            self.remove_entry(e);
        }
    }

    /// Removes entry `e` (wherever it is indexed) and frees the nodes it leaves empty.
    pub(crate) fn remove(&mut self, e: usize) {
        let Some(entry) = self.entries.get(e) else {
            return;
        };
        match &entry.target {
            Target::Conn { key, id } => {
                let k = (*key, *id);
                if self.by_conn.get(&k) == Some(&e) {
                    self.by_conn.remove(&k);
                }
            }
            Target::Local { key, .. } => {
                let k = *key;
                if self.by_local.get(&k) == Some(&e) {
                    self.by_local.remove(&k);
                }
            }
        }
        self.remove_entry(e);
    }

    fn remove_entry(&mut self, e: usize) {
        let Some(entry) = self.entries.try_remove(e) else {
            return;
        };
        let toks: Vec<&[u8]> = entry.pattern.split(|&b| b == b'.').collect();
        self.unlink(self.root, &toks, e);
    }

    /// Removes `e` below `node` along `toks`; returns whether `node` is now empty.
    fn unlink(&mut self, node: usize, toks: &[&[u8]], e: usize) -> bool {
        match toks {
            [] => self.nodes[node].here.retain(|&x| x != e),
            [t] if *t == b">" => self.nodes[node].tail.retain(|&x| x != e),
            [t, rest @ ..] => {
                let child = if *t == b"*" {
                    self.nodes[node].star
                } else {
                    self.nodes[node].lit.get(*t).copied()
                };
                if let Some(c) = child {
                    if self.unlink(c, rest, e) {
                        self.nodes.remove(c);
                        if *t == b"*" {
                            self.nodes[node].star = None;
                        } else {
                            self.nodes[node].lit.remove(*t);
                        }
                    }
                }
            }
        }
        node != self.root && self.nodes[node].is_empty()
    }

    /// The entries whose pattern matches `subject` (a valid subject), into `out` (cleared
    /// first), with queue groups resolved: the members of the groups in `served` are left
    /// out; of the matching entries of any other group, one (in turn) is kept, and the
    /// group is added to `served`.
    pub(crate) fn matches(
        &mut self,
        subject: &[u8],
        out: &mut Vec<usize>,
        served: &mut Vec<Box<[u8]>>,
    ) {
        out.clear();
        let mut toks: [&[u8]; MAX_TOKENS] = [&[]; MAX_TOKENS];
        let mut n = 0;
        for t in subject.split(|&b| b == b'.') {
            if n == MAX_TOKENS {
                return;
            }
            toks[n] = t;
            n += 1;
        }
        self.collect(self.root, &toks[..n], out);
        if out.iter().any(|&e| self.entries[e].group.is_some()) {
            self.resolve_groups(out, served);
        }
    }

    fn collect(&self, node: usize, toks: &[&[u8]], out: &mut Vec<usize>) {
        let n = &self.nodes[node];
        let Some((first, rest)) = toks.split_first() else {
            out.extend_from_slice(&n.here);
            return;
        };
        out.extend_from_slice(&n.tail);
        if let Some(&c) = n.lit.get(*first) {
            self.collect(c, rest, out);
        }
        if let Some(c) = n.star {
            self.collect(c, rest, out);
        }
    }

    /// Keeps one member of each queue group among `out` (round-robin over events).
    fn resolve_groups(&mut self, out: &mut Vec<usize>, served: &mut Vec<Box<[u8]>>) {
        self.turn = self.turn.wrapping_add(1);
        let mut kept = Vec::with_capacity(out.len());
        let mut done: Vec<&[u8]> = Vec::new();
        for &e in out.iter() {
            match &self.entries[e].group {
                None => kept.push(e),
                Some(g) if done.contains(&&g[..]) => {}
                Some(g) if served.iter().any(|s| s[..] == g[..]) => {}
                Some(g) => {
                    let members: Vec<usize> = out
                        .iter()
                        .copied()
                        .filter(|&x| self.entries[x].group.as_deref() == Some(&g[..]))
                        .collect();
                    kept.push(members[self.turn as usize % members.len()]);
                    done.push(g);
                    served.push(g.clone());
                }
            }
        }
        *out = kept;
    }

    /// Ends every in-process subscription with `why` and forgets it (the core stops).
    pub(crate) fn end_locals(&mut self, why: &crate::Status) {
        let keys: Vec<u64> = self.by_local.keys().copied().collect();
        for k in keys {
            if let Some(Target::Local { sub, .. }) =
                self.by_local.get(&k).and_then(|&e| self.target(e))
            {
                sub.end(Err(why.clone()));
            }
            self.remove_local(k);
        }
    }

    /// Entry `e`'s target.
    pub(crate) fn target(&self, e: usize) -> Option<&Target> {
        self.entries.get(e).map(|x| &x.target)
    }
}

#[cfg(test)]
#[path = "subjects_tests.rs"]
mod tests;

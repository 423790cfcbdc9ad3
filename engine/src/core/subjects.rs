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
use std::collections::BTreeMap;

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
    /// Where the entry is listed: its node, which list (`tail` for a pattern ending in `>`)
    /// and its position there, so removing it is O(1) however many share the node.
    node: usize,
    tail: bool,
    slot: usize,
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
    /// Ordered by (connection, id), so a closing connection's entries are one range.
    by_conn: BTreeMap<(u32, u32), usize>,
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
            by_conn: BTreeMap::new(),
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
        let n = &self.nodes[node];
        let slot = if tail { n.tail.len() } else { n.here.len() };
        let e = self.entries.insert(Entry {
            pattern: pattern.into(),
            group: group.map(Into::into),
            target,
            node,
            tail,
            slot,
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

    /// Removes every subscription of connection `key` (it closed): O(its own subscriptions),
    /// not a scan of the core's index.
    pub(crate) fn remove_conn(&mut self, key: u32) {
        let gone: Vec<((u32, u32), usize)> = self
            .by_conn
            .range((key, 0)..=(key, u32::MAX))
            .map(|(&k, &e)| (k, e))
            .collect();
        for (k, e) in gone {
            self.by_conn.remove(&k);
            self.remove_entry(e);
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
        // O(1): the last entry of the list takes its place.
        let n = &mut self.nodes[entry.node];
        let list = if entry.tail { &mut n.tail } else { &mut n.here };
        debug_assert_eq!(list.get(entry.slot), Some(&e));
        list.swap_remove(entry.slot);
        if let Some(&moved) = list.get(entry.slot) {
            self.entries[moved].slot = entry.slot;
        }
        let toks: Vec<&[u8]> = entry.pattern.split(|&b| b == b'.').collect();
        self.unlink(self.root, &toks);
    }

    /// Frees the nodes along `toks` below `node` that the removal left empty; returns
    /// whether `node` is now empty.
    fn unlink(&mut self, node: usize, toks: &[&[u8]]) -> bool {
        match toks {
            [] => {}
            [t] if *t == b">" => {}
            [t, rest @ ..] => {
                let child = if *t == b"*" {
                    self.nodes[node].star
                } else {
                    self.nodes[node].lit.get(*t).copied()
                };
                if let Some(c) = child {
                    if self.unlink(c, rest) {
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

    /// Keeps one member of each queue group among `out` (round-robin over events), in place:
    /// no allocation per event but the group's name added to `served` (which travels to the
    /// engine's next core).
    fn resolve_groups(&mut self, out: &mut Vec<usize>, served: &mut Vec<Box<[u8]>>) {
        self.turn = self.turn.wrapping_add(1);
        let entries = &self.entries;
        let group = |e: usize| entries[e].group.as_deref();
        let mut kept = 0;
        for r in 0..out.len() {
            let e = out[r];
            let Some(g) = group(e) else {
                out[kept] = e;
                kept += 1;
                continue;
            };
            // Served by an earlier core, or decided earlier in this pass.
            if served.iter().any(|s| s[..] == g[..]) {
                continue;
            }
            // The group's first member here: its members are all at r or later.
            let members = out[r..].iter().filter(|&&x| group(x) == Some(g)).count();
            let pick = self.turn as usize % members;
            if let Some(&chosen) = out[r..].iter().filter(|&&x| group(x) == Some(g)).nth(pick) {
                out[kept] = chosen;
                kept += 1;
            }
            served.push(g.into());
        }
        out.truncate(kept);
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

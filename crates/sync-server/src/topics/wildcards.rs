//! Wildcard subscriptions as a token trie: finding the subscriptions a topic name
//! matches costs the name's tokens times the branches that match them (a literal, `*`,
//! `>`), not a scan of every subscription.
//!
//! Guarantees: [`Wildcards::matching`] returns each subscription whose pattern matches
//! the name (a session holding several matching patterns appears once per pattern: the
//! caller delivers once per session); removing the last subscription of a branch frees
//! the branch, so the trie holds nothing for patterns nobody holds.

use std::collections::HashMap;

/// Subscribers keyed by session id, for each wildcard pattern subscribed.
pub(super) struct Wildcards<T> {
    root: Node<T>,
    /// Subscriptions held (a session's pattern counts once).
    len: usize,
}

struct Node<T> {
    /// Literal next tokens.
    children: HashMap<Box<str>, Node<T>>,
    /// The next token is `*`.
    star: Option<Box<Node<T>>>,
    /// Patterns that end here.
    ends: HashMap<u64, T>,
    /// Patterns that end here with a last token `>` (one or more tokens follow).
    rest: HashMap<u64, T>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self { children: HashMap::new(), star: None, ends: HashMap::new(), rest: HashMap::new() }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.star.is_none() && self.ends.is_empty() && self.rest.is_empty()
    }

    fn collect<'a>(&'a self, tokens: &[&str], out: &mut Vec<&'a T>) {
        let Some((first, more)) = tokens.split_first() else {
            out.extend(self.ends.values());
            return;
        };
        out.extend(self.rest.values());
        if let Some(child) = self.children.get(*first) {
            child.collect(more, out);
        }
        if let Some(star) = &self.star {
            star.collect(more, out);
        }
    }

    /// Removes `id` from the pattern `tokens`; prunes branches left empty.
    fn remove(&mut self, tokens: &[&str], id: u64) -> Option<T> {
        let Some((first, more)) = tokens.split_first() else {
            return self.ends.remove(&id);
        };
        match *first {
            ">" if more.is_empty() => self.rest.remove(&id),
            "*" => {
                let star = self.star.as_mut()?;
                let removed = star.remove(more, id);
                if star.is_empty() {
                    self.star = None;
                }
                removed
            }
            literal => {
                let child = self.children.get_mut(literal)?;
                let removed = child.remove(more, id);
                if child.is_empty() {
                    self.children.remove(literal);
                }
                removed
            }
        }
    }
}

impl<T> Default for Wildcards<T> {
    fn default() -> Self {
        Self { root: Node::default(), len: 0 }
    }
}

impl<T> Wildcards<T> {
    /// Whether no wildcard subscription is held (then no name needs matching).
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds session `id`'s subscription to `pattern` (a checked pattern). Returns
    /// whether it is new.
    pub(super) fn insert(&mut self, pattern: &str, id: u64, value: T) -> bool {
        let mut node = &mut self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            let last = tokens.peek().is_none();
            node = match token {
                ">" if last => {
                    let new = node.rest.insert(id, value).is_none();
                    self.len += usize::from(new);
                    return new;
                }
                "*" => node.star.get_or_insert_with(Box::default),
                literal => node.children.entry(literal.into()).or_default(),
            };
        }
        let new = node.ends.insert(id, value).is_none();
        self.len += usize::from(new);
        new
    }

    /// Removes session `id`'s subscription to `pattern`; returns it if it was held.
    pub(super) fn remove(&mut self, pattern: &str, id: u64) -> Option<T> {
        let tokens: Vec<&str> = pattern.split('.').collect();
        let removed = self.root.remove(&tokens, id);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// Appends to `out` every subscription whose pattern matches `name` (a name that is
    /// not reserved: the caller checks).
    pub(super) fn matching<'a>(&'a self, name: &str, out: &mut Vec<&'a T>) {
        if self.is_empty() {
            return;
        }
        let tokens: Vec<&str> = name.split('.').collect();
        self.root.collect(&tokens, out);
    }
}

#[cfg(test)]
mod tests {
    use sync_core::topic::Pattern;

    use super::*;

    fn matched(trie: &Wildcards<&'static str>, name: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        trie.matching(name, &mut out);
        let mut out: Vec<&'static str> = out.into_iter().copied().collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn the_trie_agrees_with_pattern_matching() {
        let patterns = ["a.*", "a.>", "*.b", ">", "a.*.c", "*.*", "a.b.>", "x.>", "*"];
        let mut trie = Wildcards::default();
        for (i, p) in patterns.iter().enumerate() {
            assert!(trie.insert(p, i as u64, *p));
        }
        for name in ["a", "a.b", "a.b.c", "b.b", "a.x.c", "x", "x.y.z", "q.r.s.t"] {
            let mut expected: Vec<&str> =
                patterns.iter().copied().filter(|p| Pattern::parse(p).unwrap().matches(name)).collect();
            expected.sort_unstable();
            assert_eq!(matched(&trie, name), expected, "{name}");
        }
    }

    #[test]
    fn removing_frees_the_branches() {
        let mut trie = Wildcards::default();
        assert!(trie.insert("a.*.c.>", 1, "one"));
        assert!(!trie.insert("a.*.c.>", 1, "one again"), "a session holds a pattern once");
        assert!(trie.insert("a.*.c.>", 2, "two"));
        assert_eq!(trie.remove("a.*.c.>", 1), Some("one again"));
        assert_eq!(trie.remove("a.*.c.>", 1), None);
        assert_eq!(matched(&trie, "a.b.c.d"), ["two"]);
        assert_eq!(trie.remove("a.*.c.>", 2), Some("two"));
        assert!(trie.is_empty());
        assert!(trie.root.is_empty(), "no branch is left behind");
        assert_eq!(trie.remove("never.*", 3), None);
    }
}

//! What a reader's scope selects, for both backends: the "arms" of a read (one index scan
//! each, in key order, merged by the database) and the walk that filters their rows with
//! [`ReadView::may_read`], which has the final word.
//!
//! Guarantees:
//! - The arms select a superset of what the reader may read: the reader's own rows, and
//!   the rows matching each pattern of [`ReadView::shared`]. Rules that deny are not in
//!   the SQL (the view does not expose them); rows they shadow are dropped here.
//! - Every arm is an index scan: the owner by `(owner_id, sequence)` / `(user_id, id)`,
//!   an exact collection by `(collection, sequence)` / `(collection, id)`, an exact id by
//!   `(document_id, sync_revision)` / the primary key, a prefix as a range (byte order on
//!   both backends). So a reader's cost follows what they may read, not the size of the
//!   database; only an admin (or a rule that allows everything) reads the whole log.
//! - A change feed call does bounded work: it reads at most [`SCAN_FACTOR`] chunks of
//!   `max(limit + 1, CHUNK_MIN)` candidate rows, and when that is spent before the page is
//!   full it answers what it found with `reached` = the last candidate read and
//!   `has_more = true`. When the reader's shares include a dense range of ids (or of
//!   collections) that no index gives in sequence order, the call scans the log in
//!   sequence order instead, in windows of [`WINDOW_FACTOR`] chunks, at most
//!   [`MAX_WINDOWS`] of them, and answers `reached` = the end of the last window read.
//!   `list_documents` has no way to say "continue after this id"
//!   other than a full page, so it reads until the page is full or the candidates end.

use sync_core::acl::{Pattern, ReadView, Shared};
use sync_core::{ChangeEvent, Document};

use crate::ChangePage;

/// Chunks of candidate rows one `changes_since` call may read before it answers.
pub(crate) const SCAN_FACTOR: usize = 8;
/// The fewest candidate rows one chunk asks for, so that a small page over a sparse feed
/// does not cost a statement per row.
const CHUNK_MIN: usize = 64;
/// The most candidate rows one chunk asks for.
const CHUNK_MAX: usize = 20_000;
/// A change feed call that scans the log in sequence order (a dense share of ids or
/// collections by prefix: see [`Arm::is_unordered`]) reads windows of this many times
/// its chunk of sequences ...
pub(crate) const WINDOW_FACTOR: usize = 8;
/// ... and at most this many windows before it answers.
pub(crate) const MAX_WINDOWS: usize = 32;
/// More arms than this read the whole table in key order instead (filtered in SQL by
/// the collections only, then here): one statement stays small, SQLite's compound
/// SELECT stays far below its 500-term limit, and a reader with this many shares reads
/// a large part of the database anyway.
pub(crate) const MAX_ARMS: usize = 64;

/// A condition on one column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cond {
    /// No condition.
    Any,
    /// Equal to the value.
    Eq(String),
    /// `from <= value` and, when there is an upper bound, `value < to`: the names that
    /// start with `from`.
    Range { from: String, to: Option<String> },
}

impl Cond {
    fn from_pattern(pattern: &Pattern) -> Cond {
        match pattern {
            Pattern::Any => Cond::Any,
            Pattern::Exact(name) => Cond::Eq(name.clone()),
            Pattern::Prefix(prefix) => Cond::Range { from: prefix.clone(), to: prefix_end(prefix) },
        }
    }
}

/// The first string after every string that starts with `prefix`, in byte order: the
/// prefix with its last byte raised by one. Ids and collections are ASCII, so that is a
/// character; for anything else there is no upper bound (a superset, filtered later).
fn prefix_end(prefix: &str) -> Option<String> {
    let last = prefix.chars().last()?;
    if !last.is_ascii() || last == '\u{7f}' {
        return None;
    }
    let mut end = prefix[..prefix.len() - 1].to_owned();
    end.push(char::from(last as u8 + 1));
    Some(end)
}

/// One index scan of a read: the rows of one owner, or the rows whose collection and id
/// meet the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Arm {
    /// Only this owner's rows (the reader's own); `None` for a share.
    pub(crate) owner: Option<String>,
    pub(crate) collection: Cond,
    pub(crate) id: Cond,
}

impl Arm {
    /// Whether the backend must add the collections filter to this arm: an arm on one
    /// collection was only made for a collection the filter names.
    pub(crate) fn needs_collection_filter(&self) -> bool {
        !matches!(self.collection, Cond::Eq(_))
    }

    /// Whether the arm's index does not give its rows in sequence order: a share of an
    /// id prefix or a collection prefix over more than one collection is a range of the
    /// `(document_id, …)` or `(collection, sequence)` index. Such an arm is read whole
    /// and sorted for each chunk, which costs the size of the range; when that range is
    /// dense in the log, scanning the log in sequence order costs less (see
    /// [`dense_threshold`]).
    pub(crate) fn is_unordered(&self) -> bool {
        self.owner.is_none()
            && !matches!(self.collection, Cond::Eq(_))
            && (matches!(self.id, Cond::Range { .. }) || matches!(self.collection, Cond::Range { .. }))
    }
}

/// How many rows the unordered arms of a change feed must hold (counted up to this) for
/// a call to scan the log in sequence order instead of reading the arms whole. Reading
/// an arm of `R` rows whole costs `R` per chunk; scanning the `span` sequences after the
/// cursor in order finds a chunk in about `chunk * span / R` rows. The scan costs less
/// once `R * R > chunk * span`.
pub(crate) fn dense_threshold(chunk: usize, span: u64) -> u64 {
    let product = (chunk as u64).saturating_mul(span);
    product.isqrt().saturating_add(1)
}

/// The sequences one window of a scan in sequence order covers.
pub(crate) fn window(chunk: usize) -> u64 {
    (chunk as u64).saturating_mul(WINDOW_FACTOR as u64)
}

/// What a read selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The union of these arms (never empty: the owner's arm comes first).
    Arms(Vec<Arm>),
    /// Every row, in key order, filtered in SQL by the collections filter only.
    All,
}

/// The arms that select a superset of what `view` may read, within `collections`.
///
/// A share whose collection is not one exact name (`task-*` in any collection, `doc:t*`)
/// becomes, when a collections filter is given, one arm per filtered collection it
/// matches: each of those is an ordered index scan, where the range it replaces would
/// have to be read to its end and sorted.
pub(crate) fn select(view: &ReadView, collections: Option<&[String]>) -> Selection {
    let owner = Arm { owner: Some(view.user().to_owned()), collection: Cond::Any, id: Cond::Any };
    let mut arms = vec![owner];
    let add = |arm: Arm, arms: &mut Vec<Arm>| {
        if !arms.contains(&arm) {
            arms.push(arm);
        }
    };
    match view.shared() {
        Shared::Nothing => {}
        Shared::Everything => match collections {
            // Every row of the filtered collections, one ordered scan each.
            Some(names) => {
                for name in names {
                    add(Arm { owner: None, collection: Cond::Eq(name.clone()), id: Cond::Any }, &mut arms);
                }
            }
            None => return Selection::All,
        },
        Shared::Matching(patterns) => {
            for pattern in &patterns {
                let id = Cond::from_pattern(&pattern.id);
                match (&pattern.collection, collections) {
                    (Pattern::Exact(name), Some(names)) if !names.contains(name) => {}
                    // Ids are unique across collections: one document's changes are read
                    // by its id alone (a condition on the collection could lead the
                    // database to read the whole collection instead), and `may_read`
                    // checks the collection.
                    _ if matches!(pattern.id, Pattern::Exact(_)) => {
                        add(Arm { owner: None, collection: Cond::Any, id }, &mut arms);
                    }
                    (Pattern::Exact(name), _) => {
                        add(Arm { owner: None, collection: Cond::Eq(name.clone()), id }, &mut arms);
                    }
                    (collection, Some(names)) => {
                        for name in names.iter().filter(|name| collection.matches(name)) {
                            let arm = Arm { owner: None, collection: Cond::Eq(name.clone()), id: id.clone() };
                            add(arm, &mut arms);
                        }
                    }
                    (collection, None) => {
                        add(Arm { owner: None, collection: Cond::from_pattern(collection), id }, &mut arms);
                    }
                }
            }
        }
    }
    if arms.len() > MAX_ARMS { Selection::All } else { Selection::Arms(arms) }
}

/// Whether a row is in the collections filter.
pub(crate) fn in_collections(collections: Option<&[String]>, collection: &str) -> bool {
    collections.is_none_or(|names| names.iter().any(|name| name == collection))
}

/// A `changes_since` call in progress: candidates come in sequence order, chunk by chunk;
/// the visible ones are kept until the page is full, the candidates end, or the call has
/// read as many candidates as it may.
pub(crate) struct FeedWalk {
    after: u64,
    limit: usize,
    /// The last candidate read (or `after`): the next chunk starts after it.
    cursor: u64,
    /// Candidates read so far (each once, however many arms selected it).
    read: usize,
    /// Windows of the log read to their end (a scan in sequence order).
    windows: usize,
    events: Vec<ChangeEvent>,
}

/// Why a walk stopped.
pub(crate) enum Stop {
    /// `limit + 1` visible changes were found: the page is full and more follow.
    Full,
    /// The last chunk was short: nothing after it is a candidate in this snapshot.
    Exhausted,
    /// The call read as many candidates as it may.
    Spent,
}

impl FeedWalk {
    pub(crate) fn new(after: u64, limit: usize) -> FeedWalk {
        FeedWalk { after, limit, cursor: after, read: 0, windows: 0, events: Vec::new() }
    }

    /// How many candidate rows (arm rows, duplicates included) the next chunk asks for.
    pub(crate) fn chunk(&self) -> usize {
        self.limit.saturating_add(1).clamp(CHUNK_MIN, CHUNK_MAX)
    }

    /// The sequence the next chunk reads after.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Takes the next candidate, in sequence order: `false` for a repeat of the previous
    /// one (selected by two arms), which the caller skips.
    pub(crate) fn candidate(&mut self, sequence: u64) -> bool {
        // Every candidate is above `after`, where the cursor starts.
        if sequence <= self.cursor {
            return false;
        }
        self.read += 1;
        self.cursor = sequence;
        true
    }

    /// Keeps a visible change; `true` once the page is full and one more was found.
    pub(crate) fn keep(&mut self, event: ChangeEvent) -> bool {
        self.events.push(event);
        self.events.len() > self.limit
    }

    /// After a chunk of `rows` arm rows (duplicates included) that did not fill the page:
    /// whether to stop, and why.
    pub(crate) fn after_chunk(&self, rows: usize, asked: usize) -> Option<Stop> {
        if rows < asked {
            Some(Stop::Exhausted)
        } else if self.read >= SCAN_FACTOR * self.chunk() {
            Some(Stop::Spent)
        } else {
            None
        }
    }

    /// After a window of a scan in sequence order was read to its end `upper` without
    /// filling the page: every candidate up to `upper` was read. Whether to stop, and why.
    pub(crate) fn window_read(&mut self, upper: u64, latest: u64) -> Option<Stop> {
        self.cursor = self.cursor.max(upper);
        self.windows += 1;
        if upper >= latest {
            Some(Stop::Exhausted)
        } else if self.windows >= MAX_WINDOWS || self.read >= SCAN_FACTOR * self.chunk() {
            Some(Stop::Spent)
        } else {
            None
        }
    }

    /// The page, given why the walk stopped and the newest sequence of the snapshot the
    /// last chunk was read in.
    pub(crate) fn finish(mut self, stop: Stop, latest: u64) -> ChangePage {
        let after = self.after;
        match stop {
            Stop::Full => {
                self.events.truncate(self.limit);
                let reached = self.events.last().map_or(after, |e| e.sequence);
                ChangePage { events: self.events, reached, has_more: true }
            }
            Stop::Exhausted => {
                let reached = if self.events.len() >= self.limit {
                    // A full page reaches its last event (or stays at `after` for a zero limit).
                    self.events.last().map_or(after, |e| e.sequence)
                } else {
                    // Everything visible after `after` in this snapshot is in the page.
                    latest.max(after)
                };
                ChangePage { events: self.events, reached, has_more: false }
            }
            // Every visible change up to the last candidate read is in the page; whether
            // any follows is not known, so the reader asks again from there.
            Stop::Spent => ChangePage { events: self.events, reached: self.cursor.max(after), has_more: true },
        }
    }
}

/// A `list_documents` call in progress: candidates come in id order, chunk by chunk; the
/// visible ones are kept until the page is full or the candidates end.
pub(crate) struct ListWalk {
    limit: usize,
    /// The last candidate read (or the `after_id` of the call).
    cursor: String,
    documents: Vec<Document>,
}

impl ListWalk {
    pub(crate) fn new(after_id: String, limit: usize) -> ListWalk {
        ListWalk { limit, cursor: after_id, documents: Vec::new() }
    }

    /// How many candidate rows the next chunk asks for.
    pub(crate) fn chunk(&self) -> usize {
        self.limit.clamp(CHUNK_MIN, CHUNK_MAX)
    }

    /// The id the next chunk reads after.
    pub(crate) fn cursor(&self) -> &str {
        &self.cursor
    }

    /// Takes the next candidate, in id order: `false` for a repeat (selected by two arms).
    pub(crate) fn candidate(&mut self, id: &str) -> bool {
        if id <= self.cursor.as_str() {
            return false;
        }
        id.clone_into(&mut self.cursor);
        true
    }

    /// Keeps a visible document; `true` once the page is full.
    pub(crate) fn keep(&mut self, document: Document) -> bool {
        self.documents.push(document);
        self.is_full()
    }

    /// Whether the page holds `limit` documents.
    pub(crate) fn is_full(&self) -> bool {
        self.documents.len() >= self.limit
    }

    pub(crate) fn finish(self) -> Vec<Document> {
        self.documents
    }
}

/// The table a read selects from, and the names of its columns.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Table {
    /// `change_events`, keyed by `sequence`.
    Changes,
    /// `documents`, keyed by `id`.
    Documents,
}

impl Table {
    fn owner(self) -> &'static str {
        match self {
            Table::Changes => "owner_id",
            Table::Documents => "user_id",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Table::Changes => "document_id",
            Table::Documents => "id",
        }
    }
}

/// The conditions of each arm (`owner_id = ?4`, `collection = ?5 AND document_id >= ?6
/// AND document_id < ?7`, …) with parameters numbered from `first` and written as
/// `{sigil}{number}` (`?` for SQLite, `$` for PostgreSQL), and the values they bind, in
/// parameter order. An arm that selects everything has the condition `TRUE`.
pub(crate) fn arm_conditions(arms: &[Arm], table: Table, first: usize, sigil: char) -> (Vec<String>, Vec<String>) {
    let mut values: Vec<String> = Vec::new();
    let param = |value: &str, values: &mut Vec<String>| {
        values.push(value.to_owned());
        format!("{sigil}{}", first + values.len() - 1)
    };
    let mut conditions = Vec::with_capacity(arms.len());
    for arm in arms {
        let mut terms: Vec<String> = Vec::new();
        if let Some(owner) = &arm.owner {
            terms.push(format!("{} = {}", table.owner(), param(owner, &mut values)));
        }
        for (column, cond) in [("collection", &arm.collection), (table.id(), &arm.id)] {
            match cond {
                Cond::Any => {}
                Cond::Eq(value) => terms.push(format!("{column} = {}", param(value, &mut values))),
                Cond::Range { from, to } => {
                    terms.push(format!("{column} >= {}", param(from, &mut values)));
                    if let Some(to) = to {
                        terms.push(format!("{column} < {}", param(to, &mut values)));
                    }
                }
            }
        }
        conditions.push(if terms.is_empty() { "TRUE".to_owned() } else { terms.join(" AND ") });
    }
    (conditions, values)
}

#[cfg(test)]
mod tests {
    use sync_core::acl::{Acl, Rule};

    use super::*;

    fn view(user: &str, rules: &[(&str, &str, bool)]) -> ReadView {
        let rules = rules.iter().map(|(who, item, allow)| Rule::parse(who, item, "read", *allow).expect("rule"));
        Acl::new(rules.collect()).expect("acl").read_view(user)
    }

    fn range(from: &str, to: &str) -> Cond {
        Cond::Range { from: from.to_owned(), to: Some(to.to_owned()) }
    }

    fn eq(name: &str) -> Cond {
        Cond::Eq(name.to_owned())
    }

    fn share(collection: Cond, id: Cond) -> Arm {
        Arm { owner: None, collection, id }
    }

    fn own(user: &str) -> Arm {
        Arm { owner: Some(user.to_owned()), collection: Cond::Any, id: Cond::Any }
    }

    #[test]
    fn a_prefix_ends_before_the_next_prefix() {
        assert_eq!(prefix_end("task-"), Some("task.".to_owned()));
        assert_eq!(prefix_end("a_"), Some("a`".to_owned()));
        assert_eq!(prefix_end("z"), Some("{".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("é"), None);
    }

    #[test]
    fn each_kind_of_share_is_one_arm() {
        let rules = [
            ("bob", "doc:tasks/*", true),
            ("bob", "task-*", true),
            ("bob", "doc:notes/n1", true),
            ("bob", "doc:team*", true),
            ("bob", "doc:x/*", false),
            ("bob", "doc:tasks/*", true),
        ];
        let expected = vec![
            own("bob"),
            share(eq("tasks"), Cond::Any),
            share(Cond::Any, range("task-", "task.")),
            share(Cond::Any, eq("n1")),
            share(range("team", "tean"), Cond::Any),
        ];
        assert_eq!(select(&view("bob", &rules), None), Selection::Arms(expected));
        assert_eq!(select(&view("ann", &rules), None), Selection::Arms(vec![own("ann")]), "rules for others");
    }

    #[test]
    fn a_collections_filter_turns_open_collections_into_exact_ones() {
        let rules = [("bob", "task-*", true), ("bob", "doc:team*", true), ("bob", "doc:other/*", true)];
        let filter = ["team1".to_owned(), "tasks".to_owned()];
        let expected = vec![
            own("bob"),
            share(eq("team1"), range("task-", "task.")),
            share(eq("tasks"), range("task-", "task.")),
            share(eq("team1"), Cond::Any),
        ];
        assert_eq!(select(&view("bob", &rules), Some(&filter)), Selection::Arms(expected));
    }

    #[test]
    fn everything_is_one_scan_or_one_arm_per_collection() {
        let admin = ReadView::everything("root");
        assert_eq!(select(&admin, None), Selection::All);
        let filter = ["a".to_owned()];
        assert_eq!(select(&admin, Some(&filter)), Selection::Arms(vec![own("root"), share(eq("a"), Cond::Any)]));
        assert_eq!(select(&view("bob", &[("*", "*", true)]), None), Selection::All);
    }

    #[test]
    fn arms_become_numbered_conditions() {
        let arms = [own("bob"), share(eq("tasks"), range("t-", "t.")), share(Cond::Any, eq("n1"))];
        let (conditions, values) = arm_conditions(&arms, Table::Changes, 4, '?');
        assert_eq!(
            conditions,
            ["owner_id = ?4", "collection = ?5 AND document_id >= ?6 AND document_id < ?7", "document_id = ?8"]
        );
        assert_eq!(values, ["bob", "tasks", "t-", "t.", "n1"]);
        let (conditions, _) = arm_conditions(&arms[..1], Table::Documents, 3, '$');
        assert_eq!(conditions, ["user_id = $3"]);
    }

    #[test]
    fn too_many_shares_read_everything() {
        let items: Vec<String> = (0..MAX_ARMS).map(|i| format!("doc:c{i}/*")).collect();
        let rules: Vec<(&str, &str, bool)> = items.iter().map(|item| ("bob", item.as_str(), true)).collect();
        assert_eq!(select(&view("bob", &rules), None), Selection::All);
        assert!(matches!(select(&view("bob", &rules[1..]), None), Selection::Arms(arms) if arms.len() == MAX_ARMS));
    }
}

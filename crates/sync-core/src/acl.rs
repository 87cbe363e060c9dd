//! Access control (PROTOCOL.md §8): ordered rules `{user, item, action, allow}`, the
//! first that matches decides.
//!
//! The owner of a document may always do anything with it, and admin credentials bypass
//! the rules (both decided by the caller, who knows them). Otherwise the first rule whose
//! user, item and action match decides; no match denies, except that a user may create
//! documents of their own unless a rule denies it.
//!
//! A [`ReadView`] is the rules one user's reads go through, compiled once per user (and
//! again when the rules change): it answers "may this user read that document" without
//! looking at rules written for others, and tells a store which documents of others to
//! select ([`ReadView::shared`]) so that a reader's cost follows what they may read, not
//! the size of the database.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::model::{MAX_COLLECTION_LEN, MAX_ID_LEN};

/// Most rules a list may hold.
pub const MAX_RULES: usize = 10_000;
/// Longest `user` or `item` accepted in a rule.
pub const MAX_PATTERN_LEN: usize = 256;

/// What a rule allows or denies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read a document (alias `view`): get it, its history, its changes, pushes.
    Read,
    /// Create a document.
    Create,
    /// Change a document (alias `edit`).
    Update,
    /// Delete a document.
    Delete,
    /// Subscribe to a topic.
    Subscribe,
    /// Publish to a topic.
    Publish,
    /// Every action (`*`); only in rules.
    Any,
}

impl Action {
    /// The names a rule may use, aliases included.
    pub const NAMES: &'static str = "read (or view), create, update (or edit), delete, subscribe, publish, *";

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::Any => "*",
        }
    }

    /// Parses a name or an alias.
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "read" | "view" => Action::Read,
            "create" => Action::Create,
            "update" | "edit" => Action::Update,
            "delete" => Action::Delete,
            "subscribe" => Action::Subscribe,
            "publish" => Action::Publish,
            "*" => Action::Any,
            _ => return None,
        })
    }

    fn covers(self, action: Action) -> bool {
        self == Action::Any || self == action
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Part of an item: everything, one exact name, or names with a prefix (a trailing `*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*`.
    Any,
    /// A name without `*`.
    Exact(String),
    /// `prefix*`; the prefix is not empty.
    Prefix(String),
}

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => name == exact,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }

    fn parse(text: &str) -> Pattern {
        match text.strip_suffix('*') {
            Some("") => Pattern::Any,
            Some(prefix) => Pattern::Prefix(prefix.to_owned()),
            None => Pattern::Exact(text.to_owned()),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            Pattern::Any => out.push('*'),
            Pattern::Exact(exact) => out.push_str(exact),
            Pattern::Prefix(prefix) => {
                out.push_str(prefix);
                out.push('*');
            }
        }
    }
}

/// Which documents a pattern names: a collection pattern and an id pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DocPattern {
    /// The collection.
    pub collection: Pattern,
    /// The document id.
    pub id: Pattern,
}

impl DocPattern {
    /// Every document.
    pub const ALL: DocPattern = DocPattern { collection: Pattern::Any, id: Pattern::Any };

    /// Whether the document `collection/id` matches.
    pub fn matches(&self, collection: &str, id: &str) -> bool {
        self.collection.matches(collection) && self.id.matches(id)
    }

    /// Whether every document matches.
    pub fn is_all(&self) -> bool {
        self.collection == Pattern::Any && self.id == Pattern::Any
    }
}

/// What a rule is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// `*`: every document and every topic.
    All,
    /// `doc:<collection>/<id>`, `doc:<collection prefix>*`, or a bare document id (any
    /// collection), each with an optional trailing `*`.
    Doc(DocPattern),
    /// `topic:<name>`, with an optional trailing `*`.
    Topic(Pattern),
}

/// What a rule is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A document.
    Doc {
        /// Its collection.
        collection: &'a str,
        /// Its id.
        id: &'a str,
    },
    /// A topic.
    Topic(&'a str),
}

impl Item {
    /// Whether `target` matches.
    pub fn matches(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Item::All, _) => true,
            (Item::Doc(pattern), Target::Doc { collection, id }) => pattern.matches(collection, id),
            (Item::Topic(pattern), Target::Topic(name)) => pattern.matches(name),
            _ => false,
        }
    }

    /// Parses an item, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Item, String> {
        if text.is_empty() {
            return Err("the item is empty".into());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("the item is longer than {MAX_PATTERN_LEN} bytes"));
        }
        if text == "*" {
            return Ok(Item::All);
        }
        if text.find('*').is_some_and(|position| position != text.len() - 1) {
            return Err(format!("item {text:?}: `*` may only end an item (a prefix wildcard)"));
        }
        if let Some(rest) = text.strip_prefix("topic:") {
            check_chars(rest, "topic name", |b| b.is_ascii_graphic())?;
            return Ok(Item::Topic(Pattern::parse(rest)));
        }
        if let Some(rest) = text.strip_prefix("doc:") {
            let pattern = match rest.split_once('/') {
                Some((collection, id)) => {
                    check_chars(collection, "collection", collection_char)?;
                    if collection.len() > MAX_COLLECTION_LEN || collection.is_empty() {
                        return Err(format!("item {text:?}: the collection must be 1 to {MAX_COLLECTION_LEN} bytes"));
                    }
                    check_id(id, text)?;
                    DocPattern { collection: Pattern::Exact(collection.to_owned()), id: Pattern::parse(id) }
                }
                None if rest.ends_with('*') => {
                    check_chars(rest, "collection", collection_char)?;
                    DocPattern { collection: Pattern::parse(rest), id: Pattern::Any }
                }
                None => {
                    return Err(format!(
                        "item {text:?}: a document item is doc:<collection>/<id>, doc:<collection>/* or \
                         doc:<collection prefix>*"
                    ));
                }
            };
            return Ok(Item::Doc(pattern));
        }
        check_id(text, text)?;
        Ok(Item::Doc(DocPattern { collection: Pattern::Any, id: Pattern::parse(text) }))
    }
}

fn collection_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*')
}

fn check_id(id: &str, item: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("item {item:?}: the document id is empty (use * for every id)"));
    }
    if id.len() > MAX_ID_LEN + 1 {
        return Err(format!("item {item:?}: the document id is longer than {MAX_ID_LEN} bytes"));
    }
    check_chars(id, "document id", |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-' | b'*'))
}

fn check_chars(text: &str, what: &str, ok: impl Fn(u8) -> bool) -> Result<(), String> {
    match text.bytes().find(|&b| !ok(b)) {
        None if text.is_empty() => Err(format!("the {what} is empty")),
        None => Ok(()),
        Some(b) => Err(format!("the {what} {text:?} holds {:?}, which it may not", char::from(b))),
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        match self {
            Item::All => out.push('*'),
            Item::Topic(pattern) => {
                out.push_str("topic:");
                pattern.write(&mut out);
            }
            Item::Doc(DocPattern { collection: Pattern::Any, id: Pattern::Any }) => out.push_str("doc:*"),
            Item::Doc(DocPattern { collection: Pattern::Any, id }) => id.write(&mut out),
            Item::Doc(DocPattern { collection, id: Pattern::Any }) => {
                out.push_str("doc:");
                if let Pattern::Exact(name) = collection {
                    out.push_str(name);
                    out.push_str("/*");
                } else {
                    collection.write(&mut out);
                }
            }
            Item::Doc(DocPattern { collection, id }) => {
                out.push_str("doc:");
                collection.write(&mut out);
                out.push('/');
                id.write(&mut out);
            }
        }
        f.write_str(&out)
    }
}

/// Who a rule is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserPattern {
    /// `*`: everyone.
    Any,
    /// One user id.
    User(String),
}

impl UserPattern {
    /// Whether `user` matches.
    pub fn matches(&self, user: &str) -> bool {
        match self {
            UserPattern::Any => true,
            UserPattern::User(id) => id == user,
        }
    }

    fn parse(text: &str) -> Result<UserPattern, String> {
        if text == "*" {
            return Ok(UserPattern::Any);
        }
        if text.is_empty() || text.len() > MAX_PATTERN_LEN {
            return Err(format!("the user must be a user id of 1 to {MAX_PATTERN_LEN} bytes, or *"));
        }
        if text.chars().any(char::is_control) {
            return Err(format!("the user {text:?} holds a control character"));
        }
        Ok(UserPattern::User(text.to_owned()))
    }
}

impl fmt::Display for UserPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserPattern::Any => f.write_str("*"),
            UserPattern::User(id) => f.write_str(id),
        }
    }
}

/// One rule. On the wire: `{"user": "*", "item": "doc:tasks/*", "action": "read",
/// "allow": true}`; the aliases `view` and `edit` are read as `read` and `update`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Who it is for.
    pub user: UserPattern,
    /// What it is about.
    pub item: Item,
    /// What it allows or denies.
    pub action: Action,
    /// Allow (`true`) or deny.
    pub allow: bool,
}

impl Rule {
    /// Whether the rule decides `action` by `user` on `target`.
    pub fn matches(&self, user: &str, target: Target<'_>, action: Action) -> bool {
        self.action.covers(action) && self.user.matches(user) && self.item.matches(target)
    }

    /// A rule from its four fields, as text.
    pub fn parse(user: &str, item: &str, action: &str, allow: bool) -> Result<Rule, String> {
        let user = UserPattern::parse(user)?;
        let item = Item::parse(item)?;
        let action =
            Action::parse(action).ok_or_else(|| format!("unknown action {action:?}: use one of {}", Action::NAMES))?;
        Ok(Rule { user, item, action, allow })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleWire<T> {
    user: T,
    item: T,
    action: T,
    allow: bool,
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RuleWire {
            user: self.user.to_string(),
            item: self.item.to_string(),
            action: self.action.as_str().to_owned(),
            allow: self.allow,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = RuleWire::<String>::deserialize(deserializer)?;
        Rule::parse(&wire.user, &wire.item, &wire.action, wire.allow).map_err(serde::de::Error::custom)
    }
}

/// A rule list that is not acceptable: which rule, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AclError {
    /// The index of the rule at fault, when one is.
    pub rule: Option<usize>,
    /// What is wrong, naming the rule and the field.
    pub message: String,
}

/// The ordered rule list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    /// Whether some rule can decide a topic action: until one does, topics are open.
    rules_topics: bool,
}

impl Acl {
    /// No rules: every user reads and writes only their own documents.
    pub const EMPTY: Acl = Acl { rules: Vec::new(), rules_topics: false };

    fn of(rules: Vec<Rule>) -> Acl {
        let rules_topics = rules.iter().any(|rule| {
            matches!(rule.item, Item::All | Item::Topic(_))
                && (rule.action.covers(Action::Subscribe) || rule.action.covers(Action::Publish))
        });
        Acl { rules, rules_topics }
    }

    /// A list of checked rules.
    pub fn new(rules: Vec<Rule>) -> Result<Acl, AclError> {
        if rules.len() > MAX_RULES {
            return Err(AclError { rule: None, message: format!("at most {MAX_RULES} rules, not {}", rules.len()) });
        }
        Ok(Acl::of(rules))
    }

    /// Reads `{"rules": [...]}` or a bare array of rules, checking every rule: the error
    /// names the first bad rule by index and says what is wrong with it.
    pub fn from_json(value: &Value) -> Result<Acl, AclError> {
        let list = match value {
            Value::Array(list) => list,
            Value::Object(object) => match (object.get("rules"), object.len()) {
                (Some(Value::Array(list)), 1) => list,
                (Some(_), 1) => return Err(whole("`rules` must be an array of rules")),
                _ => {
                    return Err(whole(
                        "expected {\"rules\": [...]} (an object with only `rules`) or an array of rules",
                    ));
                }
            },
            _ => return Err(whole("expected {\"rules\": [...]} or an array of rules")),
        };
        if list.len() > MAX_RULES {
            return Err(whole(&format!("at most {MAX_RULES} rules, not {}", list.len())));
        }
        let mut rules = Vec::with_capacity(list.len());
        for (index, rule) in list.iter().enumerate() {
            let rule = Rule::deserialize(rule)
                .map_err(|e| AclError { rule: Some(index), message: format!("rule {index}: {e}") })?;
            rules.push(rule);
        }
        Ok(Acl::of(rules))
    }

    /// `{"rules": [...]}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "rules": self.rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the first matching rule says, if any rule matches.
    pub fn decide(&self, user: &str, target: Target<'_>, action: Action) -> Option<bool> {
        self.rules.iter().find(|rule| rule.matches(user, target, action)).map(|rule| rule.allow)
    }

    /// Whether `user` may do `action` on a document that exists, owned by `owner`: the
    /// owner always may; otherwise the first matching rule decides, and no match denies.
    pub fn may(&self, user: &str, owner: &str, collection: &str, id: &str, action: Action) -> bool {
        user == owner || self.decide(user, Target::Doc { collection, id }, action).unwrap_or(false)
    }

    /// Whether `user` may create the document `collection/id` (as its owner): yes unless
    /// a rule denies it.
    pub fn may_create(&self, user: &str, collection: &str, id: &str) -> bool {
        self.decide(user, Target::Doc { collection, id }, Action::Create).unwrap_or(true)
    }

    /// Whether `user` may do `action` (subscribe, publish) on the topic `name` by the
    /// rules: the first matching rule decides; with no rule about topics at all (no
    /// `topic:` item, no `*` item with a topic action), every topic is open; once some
    /// rule is, no match denies. Personal topics are decided before the rules (§4.1).
    pub fn may_topic(&self, user: &str, name: &str, action: Action) -> bool {
        self.decide(user, Target::Topic(name), action).unwrap_or(!self.rules_topics)
    }

    /// Whether some rule can decide a topic action (a `topic:` item, or a `*` item with an
    /// action covering `subscribe` or `publish`). Until one does, every topic that is not
    /// reserved is open, and a server need not check topic names against the rules at all.
    pub fn rules_topics(&self) -> bool {
        self.rules_topics
    }

    /// The rules `user`'s reads go through, compiled.
    pub fn read_view(&self, user: &str) -> ReadView {
        let mut rules = Vec::new();
        for rule in &self.rules {
            if !rule.action.covers(Action::Read) || !rule.user.matches(user) {
                continue;
            }
            let pattern = match &rule.item {
                Item::All => DocPattern::ALL,
                Item::Doc(pattern) => pattern.clone(),
                Item::Topic(_) => continue,
            };
            let total = pattern.is_all();
            rules.push((pattern, rule.allow));
            // Nothing after a rule that matches every document is ever reached.
            if total {
                break;
            }
        }
        // Trailing denials decide nothing that "no match" would not.
        while rules.last().is_some_and(|(_, allow)| !allow) {
            rules.pop();
        }
        ReadView { user: user.to_owned(), everything: false, rules }
    }
}

fn whole(message: &str) -> AclError {
    AclError { rule: None, message: message.to_owned() }
}

/// What one user may read: their own documents, and others' as the rules say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadView {
    user: String,
    /// Admin: every document.
    everything: bool,
    /// The rules that can decide this user's reads, in order (none after one that
    /// matches every document, none that only deny after the last that allows).
    rules: Vec<(DocPattern, bool)>,
}

/// Which documents of others a reader may see, for a store to select by. A superset: the
/// store keeps only the rows [`ReadView::may_read`] accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shared {
    /// None: only the reader's own.
    Nothing,
    /// Those matching any of these patterns (none of them matches everything).
    Matching(Vec<DocPattern>),
    /// Possibly any document.
    Everything,
}

impl ReadView {
    /// A reader of their own documents only (no rules).
    pub fn owner_only(user: &str) -> ReadView {
        ReadView { user: user.to_owned(), everything: false, rules: Vec::new() }
    }

    /// A reader of every document (admin credentials).
    pub fn everything(user: &str) -> ReadView {
        ReadView { user: user.to_owned(), everything: true, rules: Vec::new() }
    }

    /// The reading user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the reader may read a document of `owner` in `collection` with `id`.
    pub fn may_read(&self, owner: &str, collection: &str, id: &str) -> bool {
        self.everything
            || owner == self.user
            || self.rules.iter().find(|(pattern, _)| pattern.matches(collection, id)).is_some_and(|(_, allow)| *allow)
    }

    /// Which documents of others to select.
    pub fn shared(&self) -> Shared {
        if self.everything {
            return Shared::Everything;
        }
        let allowed: Vec<DocPattern> =
            self.rules.iter().filter(|(_, allow)| *allow).map(|(pattern, _)| pattern.clone()).collect();
        if allowed.is_empty() {
            Shared::Nothing
        } else if allowed.iter().any(DocPattern::is_all) {
            Shared::Everything
        } else {
            Shared::Matching(allowed)
        }
    }

    /// Whether the reader sees nothing but their own documents.
    pub fn is_owner_only(&self) -> bool {
        !self.everything && self.rules.is_empty()
    }
}

//! Access control rules: every form of item, user and action, aliases, first-match order,
//! validation, and the compiled read view against the rules it was compiled from.

use proptest::prelude::*;
use serde_json::json;
use sync_core::acl::{Acl, Action, DocPattern, Item, Pattern, ReadView, Rule, Shared, Target};

fn acl(rules: serde_json::Value) -> Acl {
    Acl::from_json(&rules).expect("valid rules")
}

fn doc<'a>(collection: &'a str, id: &'a str) -> Target<'a> {
    Target::Doc { collection, id }
}

#[test]
fn every_item_form_matches_what_it_names() {
    let cases: &[(&str, &[Target<'_>], &[Target<'_>])] = &[
        ("*", &[doc("tasks", "a"), Target::Topic("x.y")], &[]),
        ("doc:*", &[doc("tasks", "a"), doc("notes", "b")], &[Target::Topic("a")]),
        ("doc:tasks/*", &[doc("tasks", "a"), doc("tasks", "zz")], &[doc("tasks2", "a"), doc("task", "a")]),
        ("doc:tasks/a1", &[doc("tasks", "a1")], &[doc("tasks", "a10"), doc("notes", "a1"), doc("tasks", "a")]),
        ("doc:tasks/a*", &[doc("tasks", "a"), doc("tasks", "a10")], &[doc("tasks", "b"), doc("notes", "a1")]),
        ("doc:ta*", &[doc("tasks", "x"), doc("ta", "y")], &[doc("t", "x"), doc("notes", "ta")]),
        (
            "item123",
            &[doc("tasks", "item123"), doc("notes", "item123")],
            &[doc("tasks", "item1234"), doc("t", "item12")],
        ),
        ("task-*", &[doc("tasks", "task-1"), doc("x", "task-")], &[doc("tasks", "task"), doc("task-", "1")]),
        ("topic:team.42", &[Target::Topic("team.42")], &[Target::Topic("team.420"), doc("topic", "team.42")]),
        ("topic:team-*", &[Target::Topic("team-a"), Target::Topic("team-")], &[Target::Topic("team")]),
        ("topic:*", &[Target::Topic("anything")], &[doc("a", "b")]),
    ];
    for (text, matching, other) in cases {
        let item = Item::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        for target in *matching {
            assert!(item.matches(*target), "{text} should match {target:?}");
        }
        for target in *other {
            assert!(!item.matches(*target), "{text} should not match {target:?}");
        }
        assert_eq!(item.to_string(), *text, "an item prints as written");
        assert_eq!(Item::parse(&item.to_string()).unwrap(), item);
    }
}

#[test]
fn malformed_items_users_and_actions_are_refused_with_the_reason() {
    for (item, needle) in [
        ("", "empty"),
        ("doc:", "document item"),
        ("doc:tasks", "doc:<collection>/<id>"),
        ("doc:tasks/", "document id is empty"),
        ("doc:/a", "collection"),
        ("doc:Tasks/a", "collection"),
        ("doc:t*/a", "`*` may only end"),
        ("a*b", "`*` may only end"),
        ("**", "`*` may only end"),
        ("doc:tasks/a/b", "'/'"),
        ("a b", "' '"),
        ("topic:", "topic name is empty"),
        ("topic:a b", "' '"),
    ] {
        let error = Item::parse(item).expect_err(item);
        assert!(error.contains(needle), "{item:?}: {error}");
    }
    assert!(Item::parse(&"a".repeat(300)).unwrap_err().contains("longer"));
    assert!(Rule::parse("", "*", "read", true).unwrap_err().contains("user"));
    assert!(Rule::parse("u\n", "*", "read", true).unwrap_err().contains("control"));
    let error = Rule::parse("*", "*", "fly", true).unwrap_err();
    assert!(error.contains("unknown action \"fly\"") && error.contains("view"), "{error}");
}

#[test]
fn aliases_are_read_as_their_action_and_written_canonically() {
    let rules = acl(json!([
        {"user": "*", "item": "item123", "action": "view", "allow": true},
        {"user": "bob", "item": "doc:tasks/*", "action": "edit", "allow": true},
    ]));
    assert_eq!(rules.rules()[0].action, Action::Read);
    assert_eq!(rules.rules()[1].action, Action::Update);
    assert!(rules.may("anyone", "owner", "tasks", "item123", Action::Read));
    assert!(!rules.may("anyone", "owner", "tasks", "item123", Action::Update));
    assert!(rules.may("bob", "owner", "tasks", "x", Action::Update));
    assert_eq!(
        rules.to_json(),
        json!({"rules": [
            {"user": "*", "item": "item123", "action": "read", "allow": true},
            {"user": "bob", "item": "doc:tasks/*", "action": "update", "allow": true},
        ]})
    );
    assert_eq!(Acl::from_json(&rules.to_json()).unwrap(), rules, "what GET answers, PUT takes back");
}

#[test]
fn the_first_matching_rule_decides_and_no_match_denies() {
    let rules = acl(json!({"rules": [
        {"user": "bob", "item": "doc:tasks/secret", "action": "*", "allow": false},
        {"user": "*", "item": "doc:tasks/*", "action": "read", "allow": true},
        {"user": "bob", "item": "doc:tasks/*", "action": "read", "allow": false},
        {"user": "carol", "item": "*", "action": "*", "allow": false},
    ]}));
    assert!(!rules.may("bob", "alice", "tasks", "secret", Action::Read), "an earlier deny wins");
    assert!(rules.may("bob", "alice", "tasks", "other", Action::Read), "an earlier allow wins over a later deny");
    assert!(rules.may("dave", "alice", "tasks", "secret", Action::Read));
    assert!(!rules.may("dave", "alice", "notes", "n", Action::Read), "no match denies");
    assert!(!rules.may("dave", "alice", "tasks", "x", Action::Delete), "a read rule allows no delete");
    assert!(rules.may("bob", "bob", "tasks", "secret", Action::Delete), "the owner always may");
    assert!(rules.may_create("dave", "notes", "new"), "creating one's own documents needs no rule");
    assert!(!rules.may_create("carol", "notes", "new"), "unless a rule denies it");
    assert!(!rules.may_create("bob", "tasks", "secret"));
    assert!(!rules.may_topic("dave", "news", Action::Subscribe), "with a rule about topics, no match denies");
    assert_eq!(rules.decide("carol", Target::Topic("news"), Action::Publish), Some(false));
}

#[test]
fn topics_are_open_until_a_rule_is_about_topics() {
    let documents_only = acl(json!({"rules": [
        {"user": "*", "item": "doc:tasks/*", "action": "*", "allow": true},
        {"user": "*", "item": "*", "action": "read", "allow": true},
    ]}));
    assert!(documents_only.may_topic("dave", "team.42.chat", Action::Subscribe));
    assert!(documents_only.may_topic("dave", "team.42.chat", Action::Publish));
    assert!(Acl::EMPTY.may_topic("dave", "news", Action::Publish));
    let topics = acl(json!({"rules": [
        {"user": "*", "item": "topic:team.42.*", "action": "subscribe", "allow": true},
    ]}));
    assert!(topics.may_topic("dave", "team.42.chat", Action::Subscribe));
    assert!(!topics.may_topic("dave", "team.42.chat", Action::Publish), "no match denies once rules name topics");
    assert!(!topics.may_topic("dave", "team.43.chat", Action::Subscribe));
    let everything = acl(json!({"rules": [{"user": "eve", "item": "*", "action": "*", "allow": false}]}));
    assert!(!everything.may_topic("dave", "news", Action::Subscribe), "a `*` item with `*` action is about topics");
}

#[test]
fn rule_lists_are_checked_whole_and_the_bad_rule_is_named() {
    let cases = [
        (json!("rules"), None, "expected"),
        (json!({"rules": {}}), None, "array"),
        (json!({"rules": [], "extra": 1}), None, "only `rules`"),
        (json!([{"user": "*", "item": "*", "action": "read", "allow": true}, {"user": "*"}]), Some(1), "rule 1"),
        (json!([{"user": "*", "item": "*", "action": "fly", "allow": true}]), Some(0), "unknown action"),
        (json!([{"user": "*", "item": "*", "action": "read", "allow": "yes"}]), Some(0), "invalid type"),
        (json!([{"user": "*", "item": "*", "action": "read", "allow": true, "alow": 1}]), Some(0), "unknown field"),
        (json!([{"user": "*", "item": "doc:x*y", "action": "read", "allow": true}]), Some(0), "`*` may only end"),
        (json!([1]), Some(0), "rule 0"),
    ];
    for (value, rule, needle) in cases {
        let error = Acl::from_json(&value).expect_err(&value.to_string());
        assert_eq!(error.rule, rule, "{value}: {error}");
        assert!(error.message.contains(needle), "{value}: {error}");
    }
    let many: Vec<_> =
        (0..=sync_core::acl::MAX_RULES).map(|_| json!({"user":"*","item":"*","action":"read","allow":true})).collect();
    assert!(Acl::from_json(&json!(many)).unwrap_err().message.contains("at most"));
    assert!(Acl::from_json(&json!({"rules": []})).unwrap().is_empty());
}

#[test]
fn a_read_view_tells_the_store_what_to_select() {
    let rules = acl(json!([
        {"user": "bob", "item": "doc:private/*", "action": "read", "allow": false},
        {"user": "*", "item": "doc:team1/*", "action": "read", "allow": true},
        {"user": "bob", "item": "task-*", "action": "*", "allow": true},
        {"user": "*", "item": "topic:*", "action": "*", "allow": true},
        {"user": "carol", "item": "*", "action": "view", "allow": true},
        {"user": "*", "item": "doc:secret/*", "action": "read", "allow": false},
    ]));
    let team = DocPattern { collection: Pattern::Exact("team1".into()), id: Pattern::Any };
    let tasks = DocPattern { collection: Pattern::Any, id: Pattern::Prefix("task-".into()) };
    assert_eq!(rules.read_view("bob").shared(), Shared::Matching(vec![team.clone(), tasks]));
    assert_eq!(rules.read_view("dave").shared(), Shared::Matching(vec![team]));
    assert_eq!(rules.read_view("carol").shared(), Shared::Everything);
    assert_eq!(Acl::default().read_view("x").shared(), Shared::Nothing);
    assert!(Acl::default().read_view("x").is_owner_only());
    assert_eq!(ReadView::everything("admin").shared(), Shared::Everything);
    assert!(ReadView::everything("admin").may_read("someone", "secret", "s"));
    let bob = rules.read_view("bob");
    assert!(bob.may_read("bob", "private", "mine"), "own documents whatever the rules say");
    assert!(!bob.may_read("alice", "private", "task-1"), "the earlier deny wins");
    assert!(bob.may_read("alice", "notes", "task-1"));
    assert!(!bob.may_read("alice", "secret", "s"));
    let only_denials = acl(json!([{"user": "*", "item": "doc:a/*", "action": "read", "allow": false}]));
    assert!(only_denials.read_view("u").is_owner_only(), "denials alone leave the owner's documents");
}

/// Rules drawn from a small alphabet, so that users, collections and ids often collide.
fn arb_rule() -> impl Strategy<Value = Rule> {
    let user = prop_oneof![Just("*".to_owned()), "[ab]".prop_map(|s| s)];
    let item = prop_oneof![
        Just("*".to_owned()),
        Just("doc:*".to_owned()),
        "[xy]{1,2}\\*?".prop_map(|id| id),
        "[cd]".prop_map(|c| format!("doc:{c}/*")),
        "[cd]\\*".prop_map(|c| format!("doc:{c}")),
        ("[cd]", "[xy]{1,2}\\*?").prop_map(|(c, id)| format!("doc:{c}/{id}")),
        "[xy]\\*?".prop_map(|t| format!("topic:{t}")),
    ];
    let action = prop_oneof![Just("read"), Just("view"), Just("update"), Just("*"), Just("create")];
    (user, item, action, any::<bool>()).prop_map(|(u, i, a, allow)| Rule::parse(&u, &i, a, allow).unwrap())
}

proptest! {
    /// The compiled view decides every read exactly as the rules do, and the store's
    /// selection never misses a document the view accepts.
    #[test]
    fn the_read_view_agrees_with_the_rules(
        rules in prop::collection::vec(arb_rule(), 0..8),
        user in "[abc]",
        owner in "[abc]",
        collection in "[cd]",
        id in "[xy]{1,3}",
    ) {
        let acl = Acl::new(rules).unwrap();
        let view = acl.read_view(&user);
        let expected = acl.may(&user, &owner, &collection, &id, Action::Read);
        prop_assert_eq!(view.may_read(&owner, &collection, &id), expected);
        if expected && owner != user {
            let selected = match view.shared() {
                Shared::Everything => true,
                Shared::Matching(patterns) => patterns.iter().any(|p| p.matches(&collection, &id)),
                Shared::Nothing => false,
            };
            prop_assert!(selected, "a readable document must be selected");
        }
        // What GET /acl answers, PUT /acl takes back unchanged.
        prop_assert_eq!(Acl::from_json(&acl.to_json()).unwrap(), acl);
    }
}

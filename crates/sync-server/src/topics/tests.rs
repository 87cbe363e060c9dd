//! The registry on its own: queues instead of sockets.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::HistoryRule as HistoryConfig;
use crate::queue;

fn registry(history: Vec<HistoryConfig>, acl: Acl) -> Arc<Topics> {
    let config = TopicsSection { history, max_history_topics: 2 };
    Arc::new(Topics::new(&config, Arc::new(acl), 1 << 20).expect("valid config"))
}

fn session(topics: &Arc<Topics>, id: u64, user: &str) -> (Membership, queue::Receiver<Outbound>) {
    let (tx, rx) = queue::channel(64);
    (topics.join(id, user, SessionLink { id, tx, kill: CancellationToken::new() }), rx)
}

fn message(topic: &str, n: i64, skip_session: Option<u64>) -> TopicMessage {
    TopicMessage {
        topic: topic.into(),
        data: json!({"n": n}),
        from: Some("alice".into()),
        timestamp: Timestamp::now(),
        skip_session,
    }
}

/// What a queue holds, as (type, topic, data.n) or the reason of an `unsubscribed`.
fn received(rx: &mut queue::Receiver<Outbound>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv())
        .map(|o| {
            let v: Value = serde_json::from_slice(&o.frame).expect("json");
            match v["type"].as_str() {
                Some("data") => format!("{} {}", v["topic"].as_str().unwrap_or_default(), v["data"]["n"]),
                _ => format!("{} {} {}", v["type"], v["topic"], v["reason"]),
            }
        })
        .collect()
}

fn subscribe(topics: &Topics, who: &Membership, text: &str) -> Result<SubscribeAnswer, Refusal> {
    topics.subscribe(who.member(), &Pattern::parse(text).expect("pattern"), None, 10)
}

#[test]
fn overlapping_subscriptions_deliver_once_and_the_publisher_only_with_an_echo() {
    let topics = registry(Vec::new(), Acl::default());
    let (a, mut ra) = session(&topics, 1, "alice");
    let (b, mut rb) = session(&topics, 2, "bob");
    for text in ["team.1.chat", "team.*.chat", "team.>", ">"] {
        assert!(subscribe(&topics, &b, text).is_ok());
    }
    assert!(subscribe(&topics, &a, "team.>").is_ok());
    let delivered = topics.deliver(&message("team.1.chat", 1, Some(1))).expect("delivered");
    assert_eq!(delivered, Delivered { sessions: 1, offset: None }, "bob once; alice published without echo");
    assert_eq!(received(&mut rb), ["team.1.chat 1"]);
    assert!(received(&mut ra).is_empty());
    assert_eq!(topics.deliver(&message("team.1.chat", 2, None)).expect("delivered").sessions, 2, "with an echo");
    assert_eq!(received(&mut ra), ["team.1.chat 2"]);
    assert_eq!(topics.counts(), (1, 5));
    drop(a);
    assert_eq!(topics.counts(), (1, 4));
}

#[test]
fn personal_topics_and_broadcasts_reach_sessions_without_subscribing() {
    let topics = registry(Vec::new(), Acl::default());
    let (a1, mut ra1) = session(&topics, 1, "alice");
    let (_a2, mut ra2) = session(&topics, 2, "alice");
    let (b, mut rb) = session(&topics, 3, "bob");
    assert!(subscribe(&topics, &b, ">").is_ok());
    assert!(matches!(subscribe(&topics, &b, "user.alice"), Err(Refusal::Forbidden(_))));
    assert!(subscribe(&topics, &a1, "user.alice").is_ok(), "one's own: answered, nothing changes");
    assert_eq!(topics.counts(), (0, 1));
    assert_eq!(topics.deliver(&message("user.alice", 1, Some(1))).expect("delivered").sessions, 1);
    assert!(received(&mut ra1).is_empty(), "no echo");
    assert_eq!(received(&mut ra2), ["user.alice 1"]);
    assert!(received(&mut rb).is_empty(), "`>` does not reach another's personal topic");
    assert_eq!(topics.deliver(&message(BROADCAST, 2, None)).expect("delivered").sessions, 3);
    assert_eq!(received(&mut rb), ["broadcast 2"]);
    assert!(topics.may_publish("bob", "user.alice").is_err());
    assert!(topics.may_publish("alice", "user.alice").is_ok());
    assert!(topics.may_publish("alice", BROADCAST).is_err());
    let _ = (a1, b);
}

#[test]
fn a_session_that_ends_leaves_nothing_behind() {
    let topics = registry(Vec::new(), Acl::default());
    let sessions: Vec<_> = (0..20).map(|i| session(&topics, i, &format!("u{}", i % 3))).collect();
    for (i, (member, _)) in sessions.iter().enumerate() {
        for text in [format!("t.{i}"), "t.shared".into(), format!("t.*.{i}"), "t.>".into()] {
            assert!(subscribe(&topics, member, &text).is_ok());
        }
    }
    assert_eq!(topics.counts(), (21, 80));
    drop(sessions);
    assert_eq!(topics.counts(), (0, 0));
    assert!(read(&topics.wildcards).is_empty());
    assert!(read(&topics.members).by_user.is_empty());
}

#[test]
fn wildcards_deliver_only_what_the_rules_allow_and_a_change_ends_subscriptions() {
    let rules = |value| Acl::from_json(&value).expect("rules");
    let topics = registry(
        Vec::new(),
        rules(json!([
            {"user": "*", "item": "topic:team.secret", "action": "subscribe", "allow": false},
            {"user": "*", "item": "topic:team.*", "action": "*", "allow": true},
        ])),
    );
    let (b, mut rb) = session(&topics, 2, "bob");
    assert!(subscribe(&topics, &b, "team.>").is_ok());
    assert!(subscribe(&topics, &b, "team.open").is_ok());
    assert!(matches!(subscribe(&topics, &b, "team.secret"), Err(Refusal::Forbidden(_))));
    assert!(matches!(subscribe(&topics, &b, "other"), Err(Refusal::Forbidden(_))), "no match denies");
    topics.deliver(&message("team.secret", 1, None)).expect("delivered");
    topics.deliver(&message("team.open", 2, None)).expect("delivered");
    assert_eq!(received(&mut rb), ["team.open 2"]);
    // Now only team.open may be subscribed to: the pattern goes, with a push saying why.
    let ended = topics.set_acl(Arc::new(rules(json!([
        {"user": "*", "item": "topic:team.open", "action": "subscribe", "allow": true},
    ]))));
    assert_eq!(ended, 1);
    topics.deliver(&message("team.x", 3, None)).expect("delivered");
    topics.deliver(&message("team.open", 4, None)).expect("delivered");
    assert_eq!(received(&mut rb), [r#""unsubscribed" "team.>" "forbidden""#, "team.open 4"]);
    assert_eq!(topics.counts(), (1, 1));
}

#[test]
fn recovery_reads_the_history_of_the_topic() {
    let history = vec![HistoryConfig { pattern: "chat.>".into(), messages: 3, seconds: 60 }];
    let topics = registry(history, Acl::default());
    let (a, _ra) = session(&topics, 1, "alice");
    for n in 1..=4 {
        let delivered = topics.deliver(&message("chat.1", n, None)).expect("delivered");
        assert_eq!(delivered, Delivered { sessions: 0, offset: Some(n as u64) }, "held with nobody subscribed");
    }
    let pattern = Pattern::parse("chat.1").expect("pattern");
    let answer = topics.subscribe(a.member(), &pattern, Some((2, None)), 10).expect("subscribed");
    assert_eq!((answer.reply.offset, answer.reply.recovered), (Some(4), Some(true)));
    let epoch = answer.reply.epoch.clone().expect("an epoch");
    let frames: Vec<Value> = answer.recovered.iter().map(|f| serde_json::from_slice(f).expect("json")).collect();
    assert_eq!(frames.iter().map(|f| f["offset"].clone()).collect::<Vec<_>>(), [json!(3), json!(4)]);
    assert!(frames.iter().all(|f| f["epoch"] == json!(epoch)));
    // Every data frame decodes as the protocol's `data` message.
    let decoded = sync_core::protocol::decode_server_frame(std::str::from_utf8(&answer.recovered[0]).expect("utf8"));
    assert!(matches!(&decoded.expect("decodes")[0].message, ServerMessage::Data(d) if d.offset == Some(3)));
    let (b, _rb) = session(&topics, 2, "bob");
    let gap = topics.subscribe(b.member(), &pattern, Some((0, Some(&epoch))), 10).expect("subscribed");
    assert_eq!((gap.reply.recovered, gap.recovered.len()), (Some(false), 0), "offset 1 is gone");
    // The cap: two topics hold history; a third keeps none.
    assert_eq!(topics.deliver(&message("chat.2", 1, None)).expect("delivered").offset, Some(1));
    assert_eq!(topics.deliver(&message("chat.3", 1, None)).expect("delivered").offset, None);
}

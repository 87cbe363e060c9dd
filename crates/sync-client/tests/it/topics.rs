//! Topics as an application sees them, against a real server process over real
//! WebSockets: users and devices exchanging messages, a message routed to every local
//! subscription it matches, the personal topic, clear errors, a subscription the access
//! rules end, and subscriptions that survive a server restart and a dropped connection (recovering what was missed on a
//! topic whose history the server keeps, and saying so where it cannot).
//!
//! Nothing here waits for something *not* to happen: where a test shows that a message
//! did not arrive, a later message on the same path arrives first.

use std::time::Duration;

use serde_json::{Value, json};
use sync_client::{Gap, Subscription, SyncEngine, SyncError, TopicEvent, TopicMessage};
use sync_core::ErrorCode;
use sync_core::auth::user_id_for_email;
use sync_testkit::ServerProcess;

use crate::common::{self, Proxy};
use crate::sharing::{Sharing, rule};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
/// Longest wait for anything to arrive.
const WAIT: Duration = Duration::from_secs(15);

/// The next event of a subscription; fails the test after [`WAIT`] or when it closes.
async fn next(subscription: &mut Subscription) -> TopicEvent {
    match tokio::time::timeout(WAIT, subscription.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("{subscription:?} closed"),
        Err(_) => panic!("timed out after {WAIT:?} waiting for an event of {subscription:?}"),
    }
}

/// The next event, which must be a message.
async fn message(subscription: &mut Subscription) -> TopicMessage {
    match next(subscription).await {
        TopicEvent::Message(m) => m,
        other => panic!("expected a message on {subscription:?}, got {other:?}"),
    }
}

/// The `n` of the next message.
async fn n(subscription: &mut Subscription) -> u64 {
    let m = message(subscription).await;
    m.data["n"].as_u64().unwrap_or_else(|| panic!("no n in {m:?}"))
}

/// The `n`s of the next messages, up to and including `last`.
async fn ns_until(subscription: &mut Subscription, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        seen.push(n(subscription).await);
    }
    seen
}

/// Engines, connected and caught up.
async fn connected(engines: &[&SyncEngine]) -> anyhow::Result<()> {
    for engine in engines {
        engine.wait_for_sync(WAIT).await?;
    }
    Ok(())
}

/// Publishes `{"n": n}` and returns how many sessions it was queued for.
async fn publish(engine: &SyncEngine, topic: &str, n: u64) -> anyhow::Result<u64> {
    Ok(engine.publish(topic, json!({ "n": n }))?.await?.delivered)
}

/// Publishes `{"n": n}`, `{"n": n+1}`, … until one reaches `sessions` sessions (the
/// server holds a renewed subscription once it does); returns its `n`. Publishes refused
/// because the publisher is not connected yet are retried too.
async fn publish_until_delivered(engine: &SyncEngine, topic: &str, mut n: u64, sessions: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match engine.publish(topic, json!({ "n": n })) {
            Ok(publishing) => {
                if publishing.await.is_ok_and(|p| p.delivered == sessions) {
                    return n;
                }
            }
            Err(SyncError::NotConnected(_)) => {}
            Err(e) => panic!("publishing failed: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no publish on {topic} reached {sessions} sessions");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two users and two devices of one of them on one topic: every other session gets each
/// message, with its topic, data and publisher; the publishing session only with `echo`;
/// `delivered` counts the sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_devices_exchange_messages_on_a_topic() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let phone = common::engine(&server, dir.path(), "phone", ALICE);
    let laptop = common::engine(&server, dir.path(), "laptop", ALICE);
    let bob = common::engine(&server, dir.path(), "bob", BOB);
    connected(&[&phone, &laptop, &bob]).await?;
    let mut at_phone = phone.subscribe("team.42.chat").await?;
    let mut at_laptop = laptop.subscribe("team.42.chat").await?;
    let mut at_bob = bob.subscribe("team.42.chat").await?;

    let published = bob.publish("team.42.chat", json!({"text": "hi", "n": 1}))?.await?;
    assert_eq!((published.topic.as_str(), published.delivered, published.offset), ("team.42.chat", 2, None));
    for at in [&mut at_phone, &mut at_laptop] {
        let m = message(at).await;
        assert_eq!(m.topic, "team.42.chat");
        assert_eq!(m.data, json!({"text": "hi", "n": 1}));
        assert_eq!(m.from, Some(user_id_for_email(BOB)));
        assert_eq!((m.offset, m.epoch), (None, None), "no history is kept for this topic");
    }

    // One device reaches the other and the other user; itself only with echo.
    assert_eq!(publish(&phone, "team.42.chat", 2).await?, 2);
    let echoed = phone.publish_echo("team.42.chat", json!({"n": 3}))?.await?;
    assert_eq!(echoed.delivered, 3, "with echo the publishing session counts too");
    assert_eq!(n(&mut at_phone).await, 3, "its own message 2 did not come back; 3 did");
    assert_eq!(ns_until(&mut at_laptop, 3).await, [2, 3]);
    assert_eq!(ns_until(&mut at_bob, 3).await, [2, 3], "bob's own message 1 did not come back");
    Ok(())
}

/// One session subscribed to a name, a second handle of it, and patterns: each message
/// reaches every handle it matches, once, and `delivered` counts the session once.
/// Unsubscribing closes every handle of that text; the others keep receiving; once the
/// last handle is dropped the server stops sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_every_matching_local_subscription() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let reader = common::engine(&server, dir.path(), "reader", ALICE);
    let writer = common::engine(&server, dir.path(), "writer", BOB);
    connected(&[&reader, &writer]).await?;
    let mut exact = reader.subscribe("chat.room1").await?;
    let mut exact_again = reader.subscribe("chat.room1").await?;
    let mut star = reader.subscribe("chat.*").await?;
    let mut rest = reader.subscribe("chat.>").await?;
    let mut news = reader.subscribe("news.>").await?;

    assert_eq!(publish(&writer, "chat.room1", 1).await?, 1, "one session, however many subscriptions match");
    assert_eq!(publish(&writer, "chat.room1.thread", 2).await?, 1);
    assert_eq!(publish(&writer, "news.today", 3).await?, 1);
    assert_eq!(publish(&writer, "elsewhere", 4).await?, 0);
    // Markers that every subscription of its kind matches close each one's list.
    assert_eq!(publish(&writer, "chat.room1", 5).await?, 1);
    assert_eq!(publish(&writer, "news.today", 6).await?, 1);
    assert_eq!(ns_until(&mut exact, 5).await, [1, 5]);
    assert_eq!(ns_until(&mut exact_again, 5).await, [1, 5]);
    assert_eq!(ns_until(&mut star, 5).await, [1, 5]);
    assert_eq!(ns_until(&mut rest, 5).await, [1, 2, 5]);
    assert_eq!(ns_until(&mut news, 6).await, [3, 6]);

    reader.unsubscribe("chat.room1")?;
    assert_eq!(tokio::time::timeout(WAIT, exact.recv()).await?, None, "unsubscribed: closed");
    assert_eq!(tokio::time::timeout(WAIT, exact_again.recv()).await?, None, "every handle of it");
    assert_eq!(publish(&writer, "chat.room1", 7).await?, 1, "the patterns still match");
    assert_eq!(n(&mut star).await, 7);
    assert_eq!(n(&mut rest).await, 7);

    drop((star, rest));
    common::eventually(WAIT, "the server stops sending chat.room1 once no subscription matches", || async {
        publish(&writer, "chat.room1", 8).await.is_ok_and(|delivered| delivered == 0)
    })
    .await;
    assert_eq!(publish(&writer, "news.today", 9).await?, 1, "news.> is still held");
    assert_eq!(n(&mut news).await, 9);
    Ok(())
}

/// The personal topic reaches the user's other devices without subscribing on the
/// server (the handle is made before the engine knows its user id); other users may
/// neither publish nor subscribe to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_personal_topic_reaches_the_users_other_devices_only() -> anyhow::Result<()> {
    let server = common::server();
    let dir = tempfile::tempdir()?;
    let phone = common::engine(&server, dir.path(), "phone", ALICE);
    let laptop = common::engine(&server, dir.path(), "laptop", ALICE);
    let bob = common::engine(&server, dir.path(), "bob", BOB);
    let bob_tablet = common::engine(&server, dir.path(), "bob-tablet", BOB);
    let mut at_phone = phone.subscribe_personal()?;
    let mut at_laptop = laptop.subscribe_personal()?;
    let mut at_bob = bob.subscribe_personal()?;
    connected(&[&phone, &laptop, &bob, &bob_tablet]).await?;
    let alice_topic = format!("user.{}", user_id_for_email(ALICE));
    assert_eq!(laptop.personal_topic().as_deref(), Some(alice_topic.as_str()));
    assert_eq!(at_phone.topic(), alice_topic);

    assert_eq!(publish(&laptop, &alice_topic, 1).await?, 1, "the phone; not the laptop itself, not bob");
    let m = message(&mut at_phone).await;
    assert_eq!(
        (m.topic.as_str(), m.data.clone(), m.from),
        (alice_topic.as_str(), json!({"n": 1}), Some(user_id_for_email(ALICE)))
    );

    for refused in [bob.publish(&alice_topic, json!({"n": 2}))?.await.err(), bob.subscribe(&alice_topic).await.err()] {
        assert!(
            matches!(refused, Some(SyncError::Server { code: ErrorCode::Forbidden, .. })),
            "another user's personal topic is forbidden: {refused:?}"
        );
    }
    // Bob's own devices reach each other; alice's message never reached bob.
    let bob_topic = bob_tablet.personal_topic().expect("connected");
    assert_eq!(publish(&bob_tablet, &bob_topic, 3).await?, 1);
    assert_eq!(n(&mut at_bob).await, 3);
    assert_eq!(publish(&phone, &alice_topic, 4).await?, 1);
    assert_eq!(n(&mut at_laptop).await, 4, "the laptop's own message 1 did not come back to it");
    Ok(())
}

/// What the application gets wrong, or the server refuses, is a clear error: invalid
/// names locally, publishing offline, the rate limit. A subscription made offline is made
/// once the engine connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_errors_are_clear_and_offline_subscriptions_start_on_connecting() -> anyhow::Result<()> {
    let mut server =
        ServerProcess::prepare_sqlite(&[("SYNC_RATE_LIMIT_PER_SECOND", "1"), ("SYNC_RATE_LIMIT_BURST", "20")])?;
    let dir = tempfile::tempdir()?;
    let reader = common::engine(&server, dir.path(), "reader", ALICE);
    for bad in ["", "a..b", "a b", "a.>.b", "user.*", "user.>", "x*"] {
        let refused = reader.subscribe(bad).await;
        assert!(matches!(refused, Err(SyncError::InvalidInput(ref m)) if m.contains("topic")), "{bad:?}: {refused:?}");
    }
    for bad in ["a.*", "a.>", "", "broadcast"] {
        let refused = reader.publish(bad, Value::Null);
        assert!(matches!(refused, Err(SyncError::InvalidInput(_))), "{bad:?}: {refused:?}");
    }
    let offline = reader.publish("news.today", json!({"n": 0}));
    assert!(
        matches!(offline, Err(SyncError::NotConnected(ref m)) if m.contains("live, not queued")),
        "publishing offline: {offline:?}"
    );
    let mut news = reader.subscribe("news.today").await?;

    server.spawn()?;
    let writer = common::engine(&server, dir.path(), "writer", BOB);
    connected(&[&reader, &writer]).await?;
    let first = publish_until_delivered(&writer, "news.today", 1, 1).await;
    assert_eq!(n(&mut news).await, first, "the offline subscription was made on connecting, with no gap reported");

    // The writer's burst runs out.
    let mut refusal = None;
    for i in 0..100 {
        if let Err(e) = writer.publish("news.today", json!({"n": 100 + i}))?.await {
            refusal = Some(e);
            break;
        }
    }
    assert!(
        matches!(refusal, Some(SyncError::Server { code: ErrorCode::RateLimitExceeded, .. })),
        "the rate limit is a clear refusal: {refusal:?}"
    );
    Ok(())
}

/// The server restarts (its subscriptions gone, and with them anything published in
/// between): the engines reconnect and renew their subscriptions on their own, and the
/// subscriber is told it may have missed messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_renewed_after_the_server_restarts() -> anyhow::Result<()> {
    let mut server = common::server();
    let dir = tempfile::tempdir()?;
    let reader = common::engine(&server, dir.path(), "reader", ALICE);
    let writer = common::engine(&server, dir.path(), "writer", BOB);
    connected(&[&reader, &writer]).await?;
    let mut alerts = reader.subscribe("alerts.>").await?;
    // Broadcasts come without a subscription on the server: nothing to renew, but the
    // outage is a gap all the same.
    let mut broadcasts = reader.subscribe("broadcast").await?;
    assert_eq!(publish(&writer, "alerts.fire", 1).await?, 1);
    assert_eq!(n(&mut alerts).await, 1);

    server.restart()?;
    let renewed = publish_until_delivered(&writer, "alerts.fire", 2, 1).await;
    assert_eq!(next(&mut alerts).await, TopicEvent::Gap(Gap::NotRecovered));
    assert_eq!(n(&mut alerts).await, renewed, "live again from the first message the server sent it");
    assert_eq!(next(&mut broadcasts).await, TopicEvent::Gap(Gap::NotRecovered));
    Ok(())
}

/// A subscriber's connection drops (through a proxy the test cuts) while messages are
/// published: on reconnecting it receives what it missed on a topic with history (the
/// server's `[topics] history`), in order and without a gap, then live ones; on a topic
/// without history it is told of the gap instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_recovers_a_topic_with_history_and_reports_a_gap_elsewhere() -> anyhow::Result<()> {
    let server = ServerProcess::start_sqlite(&[("SYNC_TOPICS_HISTORY", "chat.>:100:3600")])?;
    let mut proxy = Proxy::start(&server.addr).await?;
    let dir = tempfile::tempdir()?;
    let url = format!("ws://{}/ws", proxy.addr);
    let reader =
        SyncEngine::with_config(common::config(&url, &server.api_key, &server.secret, dir.path(), "reader", ALICE))?;
    let writer = common::engine(&server, dir.path(), "writer", BOB);
    connected(&[&reader, &writer]).await?;
    let mut chat = reader.subscribe("chat.room").await?;
    let mut news = reader.subscribe("news.room").await?;

    let first = writer.publish("chat.room", json!({"n": 1}))?.await?;
    assert_eq!((first.delivered, first.offset), (1, Some(1)), "chat.> keeps history: offsets");
    let m = message(&mut chat).await;
    assert_eq!((m.data["n"].as_u64(), m.offset), (Some(1), Some(1)));
    assert!(m.epoch.is_some(), "{m:?}");
    assert_eq!(publish(&writer, "news.room", 1).await?, 1);
    assert_eq!(n(&mut news).await, 1);

    proxy.cut().await;
    common::eventually(WAIT, "the reader notices it is offline", || async { !reader.is_connected() }).await;
    // The server notices on its own time; until it has, news.room reaches the dead session.
    common::eventually(WAIT, "the server drops the reader's session", || async {
        publish(&writer, "news.room", 0).await.is_ok_and(|delivered| delivered == 0)
    })
    .await;
    for n in [2, 3] {
        assert_eq!(publish(&writer, "chat.room", n).await?, 0, "nobody holds chat.room now");
    }
    assert_eq!(publish(&writer, "news.room", 2).await?, 0);

    proxy.restore().await?;
    reader.sync_now();
    let live = publish_until_delivered(&writer, "news.room", 3, 1).await;
    assert_eq!(next(&mut news).await, TopicEvent::Gap(Gap::NotRecovered), "news keeps no history");
    assert_eq!(n(&mut news).await, live);
    assert_eq!(publish(&writer, "chat.room", 4).await?, 1);
    let mut recovered = Vec::new();
    for _ in 0..3 {
        match next(&mut chat).await {
            TopicEvent::Message(m) => recovered.push((m.data["n"].as_u64(), m.offset)),
            other => panic!("nothing but the messages was expected on chat.room, got {other:?}"),
        }
    }
    assert_eq!(recovered, [(Some(2), Some(2)), (Some(3), Some(3)), (Some(4), Some(4))]);
    Ok(())
}

/// An admin changes the access rules so that a user may no longer subscribe to a topic:
/// the server ends the subscription, and the handle says so and closes, while a
/// subscription the new rules allow goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_rules_no_longer_allow_ends_with_a_refusal() -> anyhow::Result<()> {
    let sharing = Sharing::start()?;
    let reader = sharing.engine("reader", ALICE, None);
    let writer = sharing.engine("writer", BOB, None);
    connected(&[&reader, &writer]).await?;
    let mut secret = reader.subscribe("team.secret").await?;
    let mut public = reader.subscribe("public.news").await?;
    assert_eq!(publish(&writer, "team.secret", 1).await?, 1);
    assert_eq!(n(&mut secret).await, 1);

    // From now on only `public.*` topics are open to everyone.
    assert_eq!(sharing.put_acl(json!([rule("*", "topic:public.*", "*")]))?, 204);
    match next(&mut secret).await {
        TopicEvent::Refused { code: ErrorCode::Forbidden, message } => {
            assert!(message.contains("team.secret"), "{message}")
        }
        other => panic!("expected the subscription's end, got {other:?}"),
    }
    assert_eq!(tokio::time::timeout(WAIT, secret.recv()).await?, None, "closed after the refusal");
    assert!(secret.is_closed());
    assert_eq!(publish(&writer, "public.news", 2).await?, 1);
    assert_eq!(n(&mut public).await, 2);
    let refused = reader.subscribe("team.secret").await;
    assert!(matches!(refused, Err(SyncError::Server { code: ErrorCode::Forbidden, .. })), "{refused:?}");
    Ok(())
}

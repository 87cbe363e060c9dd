//! Topics (PROTOCOL.md §4.1): subscribe, unsubscribe and publish over real WebSockets —
//! wildcards, one delivery per session, echo, personal topics and broadcasts, one order
//! per topic, recovery from history, the limits, the access rules, slow subscribers, no
//! leak once sessions close — and the admin REST routes (§9).
//!
//! Topics touch no storage, so these run on SQLite only.

use std::time::Duration;

use serde_json::{Value, json};
use sync_core::auth::user_id_for_email;

use crate::common::{self, Client, HttpResponse, TestServer, WAIT, assert_error, hmac_headers, http_request, now_secs};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const CAROL: &str = "carol@example.com";

fn user(email: &str) -> String {
    user_id_for_email(email)
}

async fn subscribe(client: &mut Client, topic: &str) -> Value {
    let reply = client.request(json!({"type": "subscribe", "topic": topic})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["topic"], topic, "{reply}");
    reply
}

async fn publish(client: &mut Client, topic: &str, data: Value) -> Value {
    client.request(json!({"type": "publish", "topic": topic, "data": data})).await
}

/// Publishes and checks the reply; returns `delivered`.
async fn published(client: &mut Client, topic: &str, data: Value) -> u64 {
    let reply = publish(client, topic, data).await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["topic"], topic, "{reply}");
    reply["delivered"].as_u64().expect("delivered")
}

/// The `data` messages pushed to `client` before the answer to a ping: everything
/// queued for it so far (see `Client::until_pong`).
async fn data_so_far(client: &mut Client) -> Vec<Value> {
    let before = client.until_pong().await;
    assert!(before.iter().all(|m| m["type"] == "data"), "only data expected: {before:?}");
    before
}

/// The data payloads of `messages`.
fn payloads(messages: &[Value]) -> Vec<Value> {
    messages.iter().map(|m| m["data"].clone()).collect()
}

/// The connection still answers.
async fn still_usable(client: &mut Client) {
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

async fn admin_post(server: &TestServer, path: &str, body: &[u8]) -> HttpResponse {
    let headers = hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http_request(server.addr, "POST", path, &headers, body).await
}

async fn status(server: &TestServer) -> Value {
    let reply =
        server.http_get_signed("/api/sync/status", &server.admin_key, &server.admin_secret, "admin@example.com").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// Waits (bounded) until `/api/sync/status` shows `topics` and `subscriptions`.
async fn await_counts(server: &TestServer, topics: u64, subscriptions: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = status(server).await;
        if body["topics"] == topics && body["subscriptions"] == subscriptions {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {topics} topics, {subscriptions} subscriptions: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_reach_each_session_once_and_the_publisher_only_with_an_echo() {
    let server = TestServer::start_with(|_| {}).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let mut carol = server.client(CAROL).await;
    // Alice holds three overlapping subscriptions; bob one pattern; carol an unrelated one.
    for topic in ["team.1.chat", "team.*.chat", "team.>"] {
        subscribe(&mut alice, topic).await;
    }
    subscribe(&mut bob, "*.1.*").await;
    subscribe(&mut carol, "team.2.>").await;

    assert_eq!(published(&mut carol, "team.1.chat", json!({"n": 1})).await, 2, "alice once, bob once");
    let got = data_so_far(&mut alice).await;
    assert_eq!(payloads(&got), [json!({"n": 1})], "one delivery however many subscriptions match");
    let message = &got[0];
    assert_eq!(message["topic"], "team.1.chat");
    assert_eq!(message["from"], json!(user(CAROL)));
    assert_eq!(message["user_id"], json!(user(CAROL)));
    assert!(message["timestamp"].as_str().is_some_and(|t| t.contains('T')), "{message}");
    assert!(message.get("request_id").is_none() && message.get("offset").is_none(), "{message}");
    assert_eq!(payloads(&data_so_far(&mut bob).await), [json!({"n": 1})]);
    assert!(data_so_far(&mut carol).await.is_empty(), "carol's pattern does not match");

    // `*` is one token, `>` one or more; the parent alone matches neither.
    assert_eq!(published(&mut carol, "team.1.chat.extra", json!(2)).await, 1, "alice by team.>");
    assert_eq!(payloads(&data_so_far(&mut alice).await), [json!(2)]);
    assert!(data_so_far(&mut bob).await.is_empty(), "*.1.* is three tokens exactly");
    assert_eq!(published(&mut carol, "team", json!(3)).await, 0);

    // Echo: without it the publishing session gets nothing; with it, its own message.
    subscribe(&mut carol, "team.2.x").await;
    assert_eq!(published(&mut carol, "team.2.x", json!(4)).await, 1, "alice only");
    assert!(data_so_far(&mut carol).await.is_empty(), "no echo by default");
    let reply = carol.request(json!({"type": "publish", "topic": "team.2.x", "data": 5, "echo": true})).await;
    assert_eq!(reply["delivered"], 2, "{reply}");
    assert_eq!(payloads(&data_so_far(&mut carol).await), [json!(5)], "exactly once, though two patterns match");
    assert_eq!(payloads(&data_so_far(&mut alice).await), [json!(4), json!(5)]);

    // `sync` is `publish`; unsubscribing stops delivery, and is idempotent.
    let reply = carol.request(json!({"type": "sync", "topic": "team.1.chat", "data": 6})).await;
    assert_eq!((reply["type"].as_str(), reply["delivered"].as_u64()), (Some("published"), Some(2)), "{reply}");
    for topic in ["team.1.chat", "team.*.chat"] {
        let reply = alice.request(json!({"type": "unsubscribe", "topic": topic})).await;
        assert_eq!((reply["type"].as_str(), reply["topic"].as_str()), (Some("unsubscribed"), Some(topic)));
    }
    let reply = alice.request(json!({"type": "unsubscribe", "topic": "never.held"})).await;
    assert_eq!(reply["type"], "unsubscribed", "{reply}");
    assert_eq!(published(&mut carol, "team.1.chat", json!(7)).await, 2, "alice still holds team.>");
    let reply = alice.request(json!({"type": "unsubscribe", "topic": "team.>"})).await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(published(&mut carol, "team.1.chat", json!(8)).await, 1, "bob only");
    assert_eq!(payloads(&data_so_far(&mut alice).await), [json!(6), json!(7)]);

    // Several patterns and no exact name: still one delivery.
    let mut dave = server.client("dave@example.com").await;
    for topic in ["zz.*", "zz.>", "*.q", "*.*"] {
        subscribe(&mut dave, topic).await;
    }
    assert_eq!(published(&mut carol, "zz.q", json!(9)).await, 1);
    assert_eq!(payloads(&data_so_far(&mut dave).await), [json!(9)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_reply_follows_every_message_the_subscription_delivered() {
    let server = TestServer::start_with(|_| {}).await;
    let mut reader = server.client(ALICE).await;
    subscribe(&mut reader, "feed").await;
    // One batch: the session's own echoed messages wait in its queue while the batch
    // runs, and the unsubscribe comes before the queue is read.
    let mut batch: Vec<Value> =
        (0..5).map(|n| json!({"type": "publish", "topic": "feed", "data": n, "echo": true})).collect();
    batch.push(json!({"type": "unsubscribe", "topic": "feed"}));
    let ids = reader.send_batch(batch).await;
    let mut data = Vec::new();
    loop {
        let message = reader.recv().await;
        if message["request_id"] == json!(ids[5]) {
            assert_eq!(message["type"], "unsubscribed", "{message}");
            break;
        }
        if message["type"] == "data" {
            data.push(message["data"].clone());
        }
    }
    assert_eq!(data, [json!(0), json!(1), json!(2), json!(3), json!(4)], "every message before `unsubscribed`");
    assert!(reader.until_pong().await.is_empty(), "nothing of the topic after it");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_one_topic_reach_every_subscriber_in_one_order() {
    let server = TestServer::start_with(|_| {}).await;
    let mut readers = [server.client(ALICE).await, server.client(BOB).await];
    subscribe(&mut readers[0], "race").await;
    subscribe(&mut readers[1], "race.>").await;
    subscribe(&mut readers[1], "race").await;
    const EACH: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..3 {
        let mut writer = server.client(CAROL).await;
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Value> =
                (0..EACH).map(|n| json!({"type": "publish", "topic": "race", "data": [w, n]})).collect();
            let ids = writer.send_batch(batch).await;
            writer.replies(&ids).await;
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let orders = [payloads(&data_so_far(&mut readers[0]).await), payloads(&data_so_far(&mut readers[1]).await)];
    assert_eq!(orders[0].len(), 3 * EACH);
    assert_eq!(orders[0], orders[1], "both subscribers saw one order");
    for w in 0..3 {
        let own: Vec<&Value> = orders[0].iter().filter(|d| d[0] == w).collect();
        assert!(own.windows(2).all(|p| p[0][1].as_u64() < p[1][1].as_u64()), "a publisher's messages keep its order");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_topics_reach_every_device_of_their_user_and_nobody_else() {
    let server = TestServer::start_with(|_| {}).await;
    let mut phone = server.client(ALICE).await;
    let mut laptop = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let alice_topic = format!("user.{}", user(ALICE));
    let bob_topic = format!("user.{}", user(BOB));

    // Nobody subscribes to another's personal topic, whatever the rules; `>` misses it.
    let reply = bob.request(json!({"type": "subscribe", "topic": alice_topic})).await;
    assert_error(&reply, "forbidden");
    assert!(reply["request_id"].is_string(), "{reply}");
    for bad in ["user.*", "user.>"] {
        assert_error(&bob.request(json!({"type": "subscribe", "topic": bad})).await, "invalid_message");
    }
    subscribe(&mut bob, ">").await;
    // Subscribing to one's own is answered and changes nothing.
    subscribe(&mut phone, &alice_topic).await;
    await_counts(&server, 0, 1).await;

    // Alice reaches her other devices; bob cannot publish there.
    assert_eq!(published(&mut phone, &alice_topic, json!("from the phone")).await, 1);
    assert_eq!(payloads(&data_so_far(&mut laptop).await), [json!("from the phone")]);
    assert!(data_so_far(&mut phone).await.is_empty(), "no echo");
    assert!(data_so_far(&mut bob).await.is_empty(), "`>` does not reach a personal topic");
    assert_error(&publish(&mut bob, &alice_topic, json!("intrusion")).await, "forbidden");
    assert_error(&publish(&mut bob, "broadcast", json!("everyone")).await, "forbidden");
    assert!(data_so_far(&mut laptop).await.is_empty());

    // The admin REST call reaches every device of the user, and only them.
    let body = json!({"user_id": user(ALICE), "data": {"note": "hello"}}).to_string();
    let response = admin_post(&server, "/api/sync/publish", body.as_bytes()).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"delivered": 2}));
    for device in [&mut phone, &mut laptop] {
        let got = data_so_far(device).await;
        assert_eq!(payloads(&got), [json!({"note": "hello"})]);
        assert_eq!(got[0]["topic"], json!(alice_topic));
        assert!(got[0]["from"].is_null(), "the server published it: {}", got[0]);
    }
    assert!(data_so_far(&mut bob).await.is_empty());
    let _ = bob_topic;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_an_error_with_the_request_id_and_the_connection_stays() {
    let server = TestServer::start_with(|config| {
        config.limits.max_subscriptions = 3;
        config.limits.max_frame_bytes = 4096;
        config.limits.max_depth = 8;
        config.rate_limit.per_second = 1;
        config.rate_limit.burst = 40;
    })
    .await;
    let mut c = server.client(ALICE).await;
    let checks: Vec<(Value, &str)> = vec![
        (json!({"type": "subscribe", "topic": "x".repeat(257)}), "invalid_message"),
        (json!({"type": "subscribe", "topic": vec!["a"; 17].join(".")}), "invalid_message"),
        (json!({"type": "publish", "topic": vec!["a"; 17].join("."), "data": 1}), "invalid_message"),
        (json!({"type": "subscribe", "topic": "a..b"}), "invalid_message"),
        (json!({"type": "publish", "topic": "a.*", "data": 1}), "invalid_message"),
        (json!({"type": "publish", "topic": "deep", "data": [[[[[[[[[1]]]]]]]]]}), "payload_too_large"),
        (json!({"type": "publish", "topic": "big", "data": "x".repeat(5000)}), "payload_too_large"),
        (json!({"type": "publish", "data": 1}), "invalid_message"),
    ];
    for (message, code) in checks {
        let reply = c.request(message.clone()).await;
        assert_error(&reply, code);
        still_usable(&mut c).await;
    }
    // A frame just under the limit whose `data` message would be over it.
    let reply = publish(&mut c, "big", json!("y".repeat(4000))).await;
    assert_error(&reply, "payload_too_large");
    // The longest name and the deepest are fine.
    let longest = "x".repeat(256);
    subscribe(&mut c, &longest).await;
    subscribe(&mut c, &vec!["a"; 16].join(".")).await;
    subscribe(&mut c, "third").await;
    subscribe(&mut c, "third").await; // held already: no fourth
    let reply = c.request(json!({"type": "subscribe", "topic": "fourth"})).await;
    assert_error(&reply, "invalid_message");
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("max_subscriptions")), "{reply}");
    still_usable(&mut c).await;
    c.request(json!({"type": "unsubscribe", "topic": "third"})).await;
    subscribe(&mut c, "fourth").await;
    // The rate limit: a publish takes a token; beyond the burst, refused.
    let mut limited = None;
    for n in 0..60 {
        let reply = publish(&mut c, "fourth", json!(n)).await;
        if reply["type"] == "error" {
            limited = Some(reply);
            break;
        }
    }
    let reply = limited.expect("the rate limit refused a publish");
    assert_error(&reply, "rate_limit_exceeded");
    assert!(reply["request_id"].is_string(), "{reply}");
    still_usable(&mut c).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscription_outlives_its_session() {
    let server = TestServer::start_with(|_| {}).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = server.client(&format!("u{i}@example.com")).await;
        for topic in [format!("room.{i}"), "room.shared".to_owned(), "room.>".to_owned(), format!("*.{i}")] {
            subscribe(&mut c, &topic).await;
        }
        clients.push(c);
    }
    await_counts(&server, 7, 24).await;
    let body = status(&server).await;
    assert_eq!(body["connections"], 6, "{body}");
    drop(clients);
    await_counts(&server, 0, 0).await;
    server.stop().await;
}

/// A server whose `chat.>` topics hold their last `messages` messages.
async fn with_history(messages: usize) -> TestServer {
    TestServer::start_with(|config| {
        config.topics.history =
            vec![sync_server::config::HistoryRule { pattern: "chat.>".into(), messages, seconds: 3600 }];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_delivers_what_was_missed_once_in_order_then_live_messages() {
    let server = with_history(100).await;
    let mut writer = server.client(BOB).await;
    let mut first = server.client(ALICE).await;
    let reply = subscribe(&mut first, "chat.room").await;
    assert_eq!(reply["offset"], 0, "{reply}");
    let epoch = reply["epoch"].as_str().expect("an epoch").to_owned();
    for n in 1..=5 {
        let reply = publish(&mut writer, "chat.room", json!(n)).await;
        assert_eq!(reply["offset"], n, "{reply}");
    }
    let got = data_so_far(&mut first).await;
    assert_eq!(got.iter().map(|m| m["offset"].clone()).collect::<Vec<_>>(), [1, 2, 3, 4, 5].map(|n| json!(n)));
    assert!(got.iter().all(|m| m["epoch"] == json!(epoch)), "{got:?}");

    // A subscriber that had read up to 2 comes back: 3, 4, 5 follow `subscribed`, then live.
    let mut again = server.client(ALICE).await;
    let reply =
        again.request(json!({"type": "subscribe", "topic": "chat.room", "since_offset": 2, "epoch": epoch})).await;
    assert_eq!((reply["type"].as_str(), reply["recovered"].as_bool()), (Some("subscribed"), Some(true)), "{reply}");
    assert_eq!(reply["offset"], 5, "{reply}");
    published(&mut writer, "chat.room", json!(6)).await;
    let got = data_so_far(&mut again).await;
    assert_eq!(payloads(&got), [3, 4, 5, 6].map(|n| json!(n)), "recovered, then live, no gap, no repeat");

    // A wrong epoch, a pattern, a topic without history: nothing recovered, live only.
    for (topic, epoch) in [("chat.room", json!("another-epoch")), ("chat.*", json!(epoch)), ("news", json!(epoch))] {
        let mut late = server.client(ALICE).await;
        let ask = json!({"type": "subscribe", "topic": topic, "since_offset": 1, "epoch": epoch});
        let reply = late.request(ask).await;
        assert_eq!((reply["type"].as_str(), reply["recovered"].as_bool()), (Some("subscribed"), Some(false)));
        assert!(data_so_far(&mut late).await.is_empty(), "{topic}: nothing recovered");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_says_so_when_a_missed_message_is_no_longer_held() {
    let server = with_history(3).await;
    let mut writer = server.client(BOB).await;
    for n in 1..=5 {
        published(&mut writer, "chat.small", json!(n)).await;
    }
    let mut reader = server.client(ALICE).await;
    let reply = reader.request(json!({"type": "subscribe", "topic": "chat.small", "since_offset": 1})).await;
    assert_eq!(reply["recovered"], false, "offset 2 is gone: {reply}");
    assert_eq!(reply["offset"], 5, "{reply}");
    assert!(data_so_far(&mut reader).await.is_empty());
    let mut reader = server.client(ALICE).await;
    let reply = reader.request(json!({"type": "subscribe", "topic": "chat.small", "since_offset": 2})).await;
    assert_eq!(reply["recovered"], true, "3, 4 and 5 are held: {reply}");
    assert_eq!(payloads(&data_so_far(&mut reader).await), [3, 4, 5].map(|n| json!(n)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_while_messages_are_published_misses_none_and_repeats_none() {
    let server = with_history(10_000).await;
    let mut writer = server.client(BOB).await;
    const TOTAL: u64 = 600;
    let (reached, mut watch) = tokio::sync::watch::channel(0u64);
    let publishing = tokio::spawn(async move {
        for chunk in 0..(TOTAL / 20) {
            let batch: Vec<Value> =
                (0..20).map(|i| json!({"type": "publish", "topic": "chat.busy", "data": chunk * 20 + i})).collect();
            let ids = writer.send_batch(batch).await;
            writer.replies(&ids).await;
            reached.send_replace((chunk + 1) * 20);
        }
    });
    // Subscribers come back mid-stream, at different points, each from where it was.
    watch.wait_for(|n| *n >= 100).await.expect("the publisher goes on");
    let mut readers = Vec::new();
    for since in [0u64, 7, 50] {
        let mut reader = server.client(ALICE).await;
        reader.send(json!({"type": "subscribe", "topic": "chat.busy", "since_offset": since, "request_id": "s"})).await;
        readers.push((since, reader));
    }
    publishing.await.expect("publisher");
    for (since, reader) in &mut readers {
        let mut offsets = Vec::new();
        let mut recovered = None;
        while offsets.last() != Some(&TOTAL) {
            let message = reader.recv().await;
            match message["type"].as_str() {
                Some("subscribed") => recovered = message["recovered"].as_bool(),
                Some("data") => offsets.push(message["offset"].as_u64().expect("offset")),
                _ => panic!("unexpected {message}"),
            }
        }
        assert_eq!(recovered, Some(true));
        let expected: Vec<u64> = (*since + 1..=TOTAL).collect();
        assert_eq!(offsets, expected, "since {since}: every offset once, in order");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_disconnected_and_nobody_waits_for_it() {
    let server = TestServer::start_with(|config| {
        config.limits.session_queue = 16;
        config.limits.write_timeout_secs = 1;
    })
    .await;
    let mut slow = server.client(ALICE).await;
    let mut fast = server.client(CAROL).await;
    let mut writer = server.client(BOB).await;
    subscribe(&mut slow, "firehose").await;
    subscribe(&mut fast, "firehose").await;
    // About 25 MB: more than the sockets buffer for a reader that reads nothing.
    const COUNT: usize = 400;
    let chunk = "x".repeat(64 * 1024);
    let reading = tokio::spawn(async move {
        let mut seen = 0;
        while seen < COUNT {
            let message = fast.recv().await;
            assert_eq!(message["type"], "data");
            assert_eq!(message["data"]["n"], seen, "in order");
            seen += 1;
        }
        fast
    });
    for n in 0..COUNT {
        // Each publish is answered at once, however full the slow subscriber is.
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            publish(&mut writer, "firehose", json!({"n": n, "pad": chunk})),
        )
        .await
        .expect("the publisher never waits for a subscriber");
        assert_eq!(reply["type"], "published", "{reply}");
    }
    let mut fast = reading.await.expect("the fast subscriber got everything");
    // The slow one is gone (its subscription with it); the others go on.
    await_counts(&server, 1, 1).await;
    assert_eq!(published(&mut writer, "firehose", json!({"n": COUNT})).await, 1);
    assert_eq!(fast.recv().await["data"]["n"], COUNT);
    let (messages, _code) = slow.recv_until_close(WAIT).await;
    assert!(messages.len() < COUNT, "the slow subscriber was cut off, not served: {}", messages.len());
    server.stop().await;
}

async fn put_acl(server: &TestServer, rules: Value) {
    let body = rules.to_string();
    let headers =
        hmac_headers(&server.admin_key, &server.admin_secret, "admin@example.com", now_secs(), body.as_bytes());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = http_request(server.addr, "PUT", "/acl", &headers, body.as_bytes()).await;
    assert_eq!(response.status, 204, "{response:?}");
}

fn rule(user: &str, item: &str, action: &str, allow: bool) -> Value {
    json!({"user": user, "item": item, "action": action, "allow": allow})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_rules_decide_subscribing_publishing_and_wildcard_delivery() {
    let server = TestServer::start_with(|_| {}).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    // Rules about documents only: topics stay open.
    put_acl(&server, json!([rule("*", "doc:tasks/*", "read", true)])).await;
    subscribe(&mut bob, "anything.goes").await;
    put_acl(
        &server,
        json!([
            rule(&user(BOB), "topic:team.secret", "subscribe", false),
            rule("*", "topic:team.*", "subscribe", true),
            rule(&user(ALICE), "topic:team.*", "publish", true),
        ]),
    )
    .await;
    // `anything.goes` is no longer allowed (no rule matches it): ended, with a push.
    let notice = bob.find(|m| m["type"] == "unsubscribed", WAIT).await.expect("an unsubscribed push");
    assert_eq!((notice["topic"].as_str(), notice["reason"].as_str()), (Some("anything.goes"), Some("forbidden")));
    assert!(notice.get("request_id").is_none(), "a push: {notice}");

    assert_error(&bob.request(json!({"type": "subscribe", "topic": "team.secret"})).await, "forbidden");
    assert_error(&bob.request(json!({"type": "subscribe", "topic": "elsewhere"})).await, "forbidden");
    subscribe(&mut bob, "team.>").await;
    assert_error(&publish(&mut bob, "team.open", json!(0)).await, "forbidden");
    still_usable(&mut bob).await;
    // The wildcard delivers every team topic but the one bob may not subscribe to.
    for topic in ["team.secret", "team.open", "team.secret", "team.other"] {
        published(&mut alice, topic, json!(topic)).await;
    }
    assert_eq!(payloads(&data_so_far(&mut bob).await), [json!("team.open"), json!("team.other")]);

    // A change of rules that no longer allows the pattern ends it after what it delivered.
    published(&mut alice, "team.open", json!("before")).await;
    put_acl(&server, json!([rule("*", "topic:team.open", "*", true)])).await;
    published(&mut alice, "team.open", json!("after")).await;
    let mut seen = Vec::new();
    while seen.last().is_none_or(|m: &Value| m["type"] != "unsubscribed") {
        seen.push(bob.recv().await);
    }
    assert_eq!(seen.last().expect("the push")["topic"], "team.>");
    assert_eq!(payloads(&seen[..seen.len() - 1]), [json!("before")]);
    assert!(data_so_far(&mut bob).await.is_empty(), "nothing after the subscription ended");
    await_counts(&server, 0, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_publish_and_broadcast_count_their_sessions_and_refuse_bad_calls() {
    let server = TestServer::start_with(|config| config.limits.max_frame_bytes = 4096).await;
    let mut alice = server.client(ALICE).await;
    let mut bob = server.client(BOB).await;
    let _idle = server.client(CAROL).await;
    subscribe(&mut alice, "alerts.>").await;
    subscribe(&mut bob, "alerts.fire").await;
    subscribe(&mut bob, "alerts.*").await;

    let ok = |response: HttpResponse| {
        assert_eq!(response.status, 200, "{response:?}");
        response.json()
    };
    let body = json!({"topic": "alerts.fire", "data": {"level": 3}}).to_string();
    assert_eq!(ok(admin_post(&server, "/api/sync/publish", body.as_bytes()).await), json!({"delivered": 2}));
    for client in [&mut alice, &mut bob] {
        let got = data_so_far(client).await;
        assert_eq!(payloads(&got), [json!({"level": 3})]);
        assert!(got[0]["from"].is_null(), "{}", got[0]);
    }
    let body = json!({"topic": "nobody.listens", "data": 1}).to_string();
    assert_eq!(ok(admin_post(&server, "/api/sync/publish", body.as_bytes()).await), json!({"delivered": 0}));
    let body = json!({"data": "maintenance at noon"}).to_string();
    assert_eq!(ok(admin_post(&server, "/api/sync/broadcast", body.as_bytes()).await), json!({"delivered": 3}));
    let got = data_so_far(&mut alice).await;
    assert_eq!((got[0]["topic"].as_str(), &got[0]["data"]), (Some("broadcast"), &json!("maintenance at noon")));

    // Status counts the topics with a subscriber and every subscription.
    let body = status(&server).await;
    assert_eq!((body["topics"].as_u64(), body["subscriptions"].as_u64()), (Some(1), Some(3)), "{body}");

    // Bad bodies name the field; credentials and size are checked.
    let bad: [(&str, Value, &str); 7] = [
        ("/api/sync/publish", json!({"data": 1}), "topic"),
        ("/api/sync/publish", json!({"topic": 5, "data": 1}), "topic"),
        ("/api/sync/publish", json!({"topic": "a.*", "data": 1}), "topic"),
        ("/api/sync/publish", json!({"topic": "a"}), "data"),
        ("/api/sync/publish", json!({"user_id": "", "data": 1}), "user_id"),
        ("/api/sync/publish", json!({"topic": "a", "user_id": "u", "data": 1}), "user_id"),
        ("/api/sync/broadcast", json!({"topic": "a"}), "data"),
    ];
    for (path, body, field) in bad {
        let response = admin_post(&server, path, body.to_string().as_bytes()).await;
        assert_eq!(response.status, 400, "{body}: {response:?}");
        let error = response.json();
        assert_eq!(error["error"]["code"], "invalid_message");
        assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{field}: {error}");
    }
    let response = admin_post(&server, "/api/sync/publish", b"not json").await;
    assert_eq!(response.status, 400, "{response:?}");
    let body = json!({"topic": "a", "data": "x".repeat(5000)}).to_string();
    let response = admin_post(&server, "/api/sync/publish", body.as_bytes()).await;
    assert_eq!((response.status, response.json()["error"]["code"].clone()), (413, json!("payload_too_large")));
    let body = json!({"topic": "a", "data": 1}).to_string();
    for path in ["/api/sync/publish", "/api/sync/broadcast"] {
        let response = http_request(server.addr, "POST", path, &[], body.as_bytes()).await;
        assert_eq!((response.status, response.json()["error"]["code"].clone()), (401, json!("invalid_auth")));
        let headers = hmac_headers(&server.api_key, &server.secret, ALICE, now_secs(), body.as_bytes());
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = http_request(server.addr, "POST", path, &headers, body.as_bytes()).await;
        assert_eq!((response.status, response.json()["error"]["code"].clone()), (403, json!("forbidden")));
    }
    assert!(data_so_far(&mut alice).await.is_empty(), "no refused call delivered anything");
    server.stop().await;
}

const JWT_SECRET: &str = "topics-test-jwt-secret";

fn token_for(user: &str) -> String {
    let claims = json!({"sub": user, "exp": now_secs() + 3600});
    common::jwt(&json!({"alg": "HS256", "typ": "JWT"}), &claims, Some(JWT_SECRET.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_clients_shapes_work_on_ws_sync() {
    let server = TestServer::start_with(|config| config.auth.jwt_secret = Some(JWT_SECRET.to_owned())).await;
    let token = token_for("js-user");
    // `?token=` on /ws/sync authenticates at once; `connect` is answered `connected`.
    let mut listener = Client::connect(&format!("ws://{}/ws/sync?token={token}", server.addr)).await;
    let welcome = listener.recv().await;
    assert_eq!((welcome["type"].as_str(), welcome["user_id"].as_str()), (Some("auth_success"), Some("js-user")));
    let connected = listener.request(json!({"type": "connect", "data": {"client": "js"}})).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert_eq!(connected["user_id"], "js-user");
    assert_eq!(connected["session_id"], welcome["session_id"]);
    assert_eq!(connected["client_id"], welcome["client_id"]);
    subscribe(&mut listener, "room.lobby").await;
    // `auth {token}` and `sync`.
    let mut talker = Client::connect(&format!("ws://{}/ws/sync", server.addr)).await;
    let reply = talker.request(json!({"type": "auth", "token": token})).await;
    assert_eq!(reply["type"], "auth_success", "{reply}");
    let reply = talker.request(json!({"type": "sync", "topic": "room.lobby", "data": "hi"})).await;
    assert_eq!((reply["type"].as_str(), reply["delivered"].as_u64()), (Some("published"), Some(1)), "{reply}");
    assert_eq!(payloads(&data_so_far(&mut listener).await), [json!("hi")]);

    // A user id on the URL without a credential is refused before the upgrade; with a
    // credential it must be the credential's user.
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for path in ["/ws/sync?user_id=js-user", "/ws?user_id=someone-else"] {
        let response = http_request(server.addr, "GET", path, &upgrade, b"").await;
        assert_eq!(response.status, 401, "{path}: {response:?}");
        assert_eq!(response.json()["error"]["code"], "invalid_auth");
    }
    let mut impostor = Client::connect(&format!("ws://{}/ws/sync?token={token}&user_id=admin", server.addr)).await;
    assert_eq!(impostor.recv().await["type"], "auth_error");
    let mut same = Client::connect(&format!("ws://{}/ws/sync?token={token}&user_id=js-user", server.addr)).await;
    assert_eq!(same.recv().await["type"], "auth_success");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_own_websocket_speaks_the_older_clients_shapes() {
    let server = TestServer::start_with(|config| config.auth.jwt_secret = Some(JWT_SECRET.to_owned())).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/js/older_client.mjs");
    let base = format!("ws://{}", server.addr);
    let token = token_for("node-user");
    let output = tokio::task::spawn_blocking(move || {
        // Node 22 has a global WebSocket; Node 20 needs the flag.
        let global = std::process::Command::new("node")
            .args(["-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
            .status()
            .expect("node is installed (this test needs Node 20 or newer)");
        let mut command = std::process::Command::new("node");
        if !global.success() {
            command.arg("--experimental-websocket");
        }
        command.arg(script).arg(&base).arg(&token).output().expect("run node")
    })
    .await
    .expect("node ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(seen["welcome"]["user_id"], "node-user", "{seen}");
    assert_eq!(seen["connected"]["session_id"], seen["welcome"]["session_id"], "{seen}");
    assert_eq!(seen["published"]["delivered"], 1, "{seen}");
    assert_eq!(seen["data"]["topic"], "room.lobby", "{seen}");
    assert_eq!(seen["data"]["data"], json!({"text": "hello from node"}), "{seen}");
    assert_eq!(seen["data"]["from"], "node-user", "{seen}");
    server.stop().await;
}

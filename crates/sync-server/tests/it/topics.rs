//! Topics (PROTOCOL.md §4.1): subscribe, unsubscribe and publish over real WebSockets —
//! wildcards, one delivery per session, echo, personal topics and broadcasts, one order
//! per topic, recovery from history, the limits, the access rules, slow subscribers, no
//! leak once sessions close — and the admin REST routes (§9).
//!
//! Topics touch no storage, so these run on SQLite only.

use std::time::Duration;

use serde_json::{Value, json};
use sync_core::auth::user_id_for_email;

use crate::common::{Client, HttpResponse, TestServer, WAIT, assert_error, hmac_headers, http_request, now_secs};

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

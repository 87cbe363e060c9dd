//! The PostgreSQL backend against the conformance suite, plus what only a shared server
//! has: several stores (as several server processes would) writing one database while a
//! reader follows the log, documents moved by another store, connection loss and
//! recovery, and the schema and its migrations.
//!
//! Each test takes a fresh database on the test kit's PostgreSQL; without PostgreSQL the
//! tests say so loudly and pass without running (CI sets `SYNC_REQUIRE_POSTGRES=1`,
//! which makes that a failure).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Connection, SqlSafeStr};
use sync_store::postgres::{PgOptions, PgStore};
use sync_store::{ReadScope, Store, StoreError, conformance};
use sync_testkit::{PgServer, PgSettings};

use crate::common::{changes_before_owners, create, json_text, update};

/// A fresh database on the shared test server, or `None` when there is no PostgreSQL.
async fn fresh_database() -> Result<Option<String>> {
    match PgServer::shared() {
        Some(server) => Ok(Some(server.create_database().await?)),
        None => Ok(None),
    }
}

async fn open(url: &str) -> Result<PgStore> {
    PgStore::open(url, PgOptions::default()).await.context("opening the store")
}

/// A raw connection, to look at or change what the store wrote.
async fn raw(url: &str) -> Result<sqlx::PgConnection> {
    sqlx::PgConnection::connect(url).await.context("raw connection")
}

fn unique() -> String {
    sync_core::model::new_document_id()
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_store_conforms() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    let store = open(&url).await?;
    conformance::run_all(&store).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_holds_on_a_reopened_database_with_data() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    conformance::run_all(&open(&url).await?).await;
    // The second run sees everything the first one wrote, and the migrations are not
    // applied twice.
    conformance::run_all(&open(&url).await?).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_stores_json_as_jsonb_with_an_index_for_the_feed() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    drop(open(&url).await?);
    let mut conn = raw(&url).await?;
    let types: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND data_type LIKE 'json%' ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await?;
    let expected = [
        ("change_events", "forward_patch", "jsonb"),
        ("change_events", "reverse_patch", "jsonb"),
        ("documents", "content", "jsonb"),
        ("documents", "vector_clock", "jsonb"),
    ];
    let types: Vec<(&str, &str, &str)> = types.iter().map(|(t, c, d)| (t.as_str(), c.as_str(), d.as_str())).collect();
    ensure!(types == expected, "JSON columns: {types:?}");
    // The feed is read by owner, by collection (a shared collection) and by document (a
    // shared document); the author's index of 0001 is gone.
    for (index, columns) in [
        ("change_events_owner_sequence", "(owner_id, sequence)"),
        ("change_events_collection_sequence", "(collection, sequence)"),
        ("change_events_document_revision", "(document_id, sync_revision)"),
        ("documents_collection_id", "(collection, id)"),
        ("documents_user_id", "(user_id, id)"),
    ] {
        let definition: Option<String> = sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
            .bind(index)
            .fetch_optional(&mut conn)
            .await?;
        ensure!(definition.as_deref().is_some_and(|d| d.contains(columns)), "{index}: {definition:?}");
    }
    let old: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'change_events_user_sequence'")
            .fetch_one(&mut conn)
            .await?;
    ensure!(old == 0, "change_events_user_sequence is still there");
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut conn).await?;
    ensure!(applied == 3, "applied migrations: {applied}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_newer_than_the_build_is_refused() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    drop(open(&url).await?);
    let mut conn = raw(&url).await?;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await?;
    match PgStore::open(&url, PgOptions::default()).await {
        Err(error @ StoreError::Open { .. }) => {
            let message = error.to_string();
            ensure!(message.contains("999"), "no version in {message:?}")
        }
        other => bail!("expected StoreError::Open, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_refused_without_the_password() -> Result<()> {
    let port = sync_testkit::server::free_port()?;
    let url = format!("postgres://sync:hunter2@127.0.0.1:{port}/sync");
    let started = Instant::now();
    match PgStore::open(&url, PgOptions::default()).await {
        Err(error @ StoreError::Open { .. }) => {
            let message = format!("{error} {error:?}");
            ensure!(!message.contains("hunter2"), "the password leaked: {message}");
            ensure!(message.contains(&port.to_string()), "no address in {message:?}");
        }
        other => bail!("expected StoreError::Open, got {other:?}"),
    }
    ensure!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    match PgStore::open("postgres://sync:hunter2@/", PgOptions::default()).await {
        Err(error @ StoreError::Open { .. }) => {
            let message = format!("{error} {error:?}");
            ensure!(!message.contains("hunter2"), "the password leaked: {message}")
        }
        other => bail!("expected StoreError::Open, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_moved_by_another_store_is_a_conflict_and_nothing_is_written() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    let (first, second) = (open(&url).await?, open(&url).await?);
    let base = create("ada", "contested", json!({"n": 0}));
    first.append_batch(vec![base.clone()]).await?;

    // Both stores decide an update of revision 1, as two server processes would.
    let mine = update(&base.document, json!({"n": 1}));
    let theirs = update(&base.document, json!({"n": 2}));
    let bystander = create("ada", "bystander", json!({}));
    second.append_batch(vec![theirs.clone()]).await?;
    match first.append_batch(vec![bystander.clone(), mine]).await {
        Err(StoreError::Conflict(ids)) => ensure!(ids == vec!["contested".to_owned()], "{ids:?}"),
        other => bail!("expected Conflict, got {other:?}"),
    }
    ensure!(first.load_documents(vec!["bystander".to_owned()]).await?.is_empty(), "the refused batch wrote");
    ensure!(first.load_documents(vec!["contested".to_owned()]).await? == vec![(*theirs.document).clone()]);
    ensure!(first.latest_sequence().await? == 2, "a refused batch consumed sequences");

    // A create of an id the other store took meanwhile is a duplicate.
    second.append_batch(vec![create("bob", "taken", json!({}))]).await?;
    match first.append_batch(vec![create("ada", "taken", json!({}))]).await {
        Err(StoreError::Duplicate(id)) => ensure!(id == "taken"),
        other => bail!("expected Duplicate, got {other:?}"),
    }
    Ok(())
}

/// What one writer had acknowledged: sequence → event id.
type Acked = BTreeMap<u64, String>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_sharing_a_database_commit_in_sequence_order_and_a_follower_misses_nothing() -> Result<()> {
    const STORES: usize = 3;
    const WRITERS_PER_STORE: usize = 6;
    const BATCHES: usize = 40;
    let Some(url) = fresh_database().await? else { return Ok(()) };
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(Arc::new(open(&url).await?));
    }
    // Every writer is the same user, so the follower's view is the whole log: any
    // sequence it skips, or sees out of order, is a gap or a reordering.
    let user = "everyone";
    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let store = Arc::clone(&stores[0]);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen: Acked = BTreeMap::new();
            let mut after = 0;
            loop {
                let finished = done.load(Ordering::Acquire);
                let page = store.changes_since(ReadScope::owner_only(user), after, 7, None).await?;
                for event in &page.events {
                    ensure!(event.sequence == after + 1, "after {after} the follower got {}", event.sequence);
                    after = event.sequence;
                    seen.insert(event.sequence, event.event_id.clone());
                }
                ensure!(
                    page.reached == after,
                    "the page reached {} but the follower only saw up to {after}",
                    page.reached
                );
                if finished && !page.has_more {
                    return Ok::<_, anyhow::Error>(seen);
                }
                if page.events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for w in 0..WRITERS_PER_STORE {
            let store = Arc::clone(store);
            writers.push(tokio::spawn(async move {
                let mut acked = Acked::new();
                let id = format!("doc-{s}-{w}");
                let mut current = create(user, &id, json!({"n": 0}));
                for n in 0..BATCHES {
                    // Batches of one to three changes to the writer's own document.
                    let mut batch = if n == 0 { vec![current.clone()] } else { Vec::new() };
                    for k in 0..1 + n % 3 {
                        let next = update(&current.document, json!({"n": n, "k": k}));
                        batch.push(next.clone());
                        current = next;
                    }
                    let sequences = store.append_batch(batch.clone()).await?;
                    ensure!(sequences.windows(2).all(|p| p[1] == p[0] + 1), "a batch's sequences are consecutive");
                    for (sequence, change) in sequences.into_iter().zip(batch) {
                        acked.insert(sequence, change.event.event_id);
                    }
                }
                Ok::<_, anyhow::Error>(acked)
            }));
        }
    }
    let mut acked = Acked::new();
    for writer in writers {
        for (sequence, event_id) in writer.await?? {
            ensure!(acked.insert(sequence, event_id).is_none(), "sequence {sequence} acknowledged twice");
        }
    }
    done.store(true, Ordering::Release);
    let seen = follower.await??;

    let total = acked.len() as u64;
    ensure!(acked.keys().copied().eq(1..=total), "acknowledged sequences are not 1..={total}");
    ensure!(seen == acked, "the follower's log differs from what was acknowledged");
    for store in &stores {
        ensure!(store.latest_sequence().await? == total, "latest_sequence");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_server_fails_appends_and_the_store_recovers_by_itself() -> Result<()> {
    let Some(server) = PgServer::private_or_skip(PgSettings::default()) else { return Ok(()) };
    let url = server.create_database().await?;
    let store = open(&url).await?;
    let first = create("ada", "before", json!({"n": 1}));
    ensure!(store.append_batch(vec![first.clone()]).await? == vec![1]);

    server.stop_immediately()?;
    let started = Instant::now();
    let lost = store.append_batch(vec![create("ada", "during", json!({}))]).await;
    ensure!(matches!(lost, Err(StoreError::Database { .. })), "an append while the server is down: {lost:?}");
    ensure!(started.elapsed() < Duration::from_secs(15), "the failure took {:?}", started.elapsed());
    ensure!(store.ping().await.is_err(), "ping while the server is down");

    server.start()?;
    // The pool reconnects on its own; the first attempts may still meet old connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sequences = loop {
        match store.append_batch(vec![create("ada", &format!("after-{}", unique()), json!({}))]).await {
            Ok(sequences) => break sequences,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("the store did not recover: {e}"),
        }
    };
    store.ping().await?;
    ensure!(
        store.load_documents(vec!["before".to_owned()]).await? == vec![(*first.document).clone()],
        "the acknowledged create"
    );
    let latest = store.latest_sequence().await?;
    ensure!(sequences == vec![latest], "sequences continue without a gap: {sequences:?}, latest {latest}");
    let page = store.changes_since(ReadScope::owner_only("ada"), 0, 100, None).await?;
    let logged: Vec<u64> = page.events.iter().map(|e| e.sequence).collect();
    ensure!(logged == (1..=latest).collect::<Vec<_>>(), "the log is gap-free: {logged:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_rows_are_reported_with_their_id() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    let store = open(&url).await?;
    store.append_batch(vec![create("ada", "doc-bad", json!({"a": 1}))]).await?;
    let mut conn = raw(&url).await?;
    sqlx::query("UPDATE documents SET sync_revision = -1 WHERE id = 'doc-bad'").execute(&mut conn).await?;
    sqlx::query("UPDATE change_events SET sync_revision = -5 WHERE document_id = 'doc-bad'").execute(&mut conn).await?;
    conformance::damaged_rows_are_reported(&store, "ada", "doc-bad", 1).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_0002_makes_the_authors_of_older_changes_their_owners() -> Result<()> {
    let Some(url) = fresh_database().await? else { return Ok(()) };
    let mut conn = raw(&url).await?;
    // Migration 0001 alone, recorded as sqlx records it, as a database of the release
    // before this one holds it.
    let first = Migration::new(
        1,
        Cow::Borrowed("initial"),
        MigrationType::Simple,
        include_str!("../../migrations/postgres/0001_initial.sql").into_sql_str(),
        false,
    );
    Migrator::with_migrations(vec![first]).run_direct(None, &mut conn, false).await?;
    for (sequence, change) in (1_i64..).zip(changes_before_owners()) {
        let (d, e) = (&change.document, &change.event);
        sqlx::query(
            "INSERT INTO documents (id, user_id, collection, title, content, sync_revision, vector_clock, \
             content_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb, $8, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET title = excluded.title, content = excluded.content, \
             sync_revision = excluded.sync_revision, vector_clock = excluded.vector_clock, \
             content_hash = excluded.content_hash, updated_at = excluded.updated_at",
        )
        .bind(&d.id)
        .bind(&d.user_id)
        .bind(&d.collection)
        .bind(&d.title)
        .bind(json_text(&d.content))
        .bind(d.sync_revision as i64)
        .bind(json_text(&d.vector_clock))
        .bind(&d.content_hash)
        .bind(d.created_at.unix_millis())
        .bind(d.updated_at.unix_millis())
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "INSERT INTO change_events (sequence, event_id, document_id, collection, user_id, client_id, \
             event_type, forward_patch, reverse_patch, sync_revision, created_at, content_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10, $11, $12)",
        )
        .bind(sequence)
        .bind(&e.event_id)
        .bind(&e.document_id)
        .bind(&e.collection)
        .bind(&e.user_id)
        .bind(&e.client_id)
        .bind(e.event_type.as_str())
        .bind(e.forward_patch.as_ref().map(json_text))
        .bind(e.reverse_patch.as_ref().map(json_text))
        .bind(e.sync_revision as i64)
        .bind(e.created_at.unix_millis())
        .bind(&e.content_hash)
        .execute(&mut conn)
        .await?;
    }
    sqlx::query("UPDATE counters SET value = 3 WHERE name = 'change_events'").execute(&mut conn).await?;

    let store = open(&url).await?;
    let pair = |s: i64, author: &str, owner: &str| (s, author.to_owned(), owner.to_owned());
    let backfilled = vec![pair(1, "ada", "ada"), pair(2, "bob", "bob"), pair(3, "ada", "ada")];
    let found = owners(&mut conn).await?;
    ensure!(found == backfilled, "owners after the migration: {found:?}");
    let nullable: String = sqlx::query_scalar(
        "SELECT is_nullable::text FROM information_schema.columns \
         WHERE table_name = 'change_events' AND column_name = 'owner_id'",
    )
    .fetch_one(&mut conn)
    .await?;
    ensure!(nullable == "NO", "owner_id is nullable: {nullable}");

    conformance::changes_from_before_owners_are_their_authors(&store).await;
    let mut expected = backfilled;
    expected.push(pair(4, "bob", "ada"));
    let found = owners(&mut conn).await?;
    ensure!(found == expected, "a change by bob to ada's document: {found:?}");
    Ok(())
}

/// `(sequence, author, owner)` of every change, in order.
async fn owners(conn: &mut sqlx::PgConnection) -> Result<Vec<(i64, String, String)>> {
    let sql = "SELECT sequence, user_id, owner_id FROM change_events ORDER BY sequence";
    Ok(sqlx::query_as(sql).fetch_all(conn).await?)
}

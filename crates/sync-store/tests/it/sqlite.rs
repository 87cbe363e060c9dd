//! The SQLite backend against the conformance suite, plus what only SQLite has: opening
//! files, reopening them, the writer thread under concurrent callers, the stored cursor,
//! and how corrupt rows are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use sync_store::sqlite::SqliteStore;
use sync_store::{AclSince, ApiCredential, ReadScope, Store, StoreError, TokenRecord, conformance};

use crate::common::{changes_before_owners, create, json_text, update};

/// A fresh database file in its own temporary directory (removed on drop).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        Ok(Fixture { dir: tempfile::tempdir().context("creating a temporary directory")? })
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("sync.db")
    }

    fn open(&self) -> Result<SqliteStore> {
        SqliteStore::open(&self.db()).context("opening the store")
    }

    /// A raw connection, to look at or damage what the store wrote.
    fn raw(&self) -> Result<rusqlite::Connection> {
        rusqlite::Connection::open(self.db()).context("opening a raw connection")
    }
}

/// The message of the `Open` error that opening `path` fails with.
fn open_error(path: &Path) -> Result<String> {
    match SqliteStore::open(path) {
        Err(error @ StoreError::Open { .. }) => Ok(error.to_string()),
        Err(other) => bail!("expected StoreError::Open, got {other:?}"),
        Ok(_) => bail!("{} opened", path.display()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_conforms() -> Result<()> {
    let fixture = Fixture::new()?;
    let store = fixture.open()?;
    conformance::run_all(&store).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_holds_on_a_reopened_database_with_data() -> Result<()> {
    let fixture = Fixture::new()?;
    conformance::run_all(&fixture.open()?).await;
    // The second run sees everything the first one wrote, after a close and reopen.
    conformance::run_all(&fixture.open()?).await;
    Ok(())
}

#[test]
fn a_directory_is_refused_with_its_path() -> Result<()> {
    let fixture = Fixture::new()?;
    let message = open_error(fixture.dir.path())?;
    ensure!(message.contains(&fixture.dir.path().display().to_string()), "no path in {message:?}");
    Ok(())
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() -> Result<()> {
    let fixture = Fixture::new()?;
    let text = "these are someone's notes, not a database\n".repeat(200);
    std::fs::write(fixture.db(), &text)?;
    let message = open_error(&fixture.db())?;
    ensure!(message.contains(&fixture.db().display().to_string()), "no path in {message:?}");
    ensure!(message.contains("not a database"), "no cause in {message:?}");
    ensure!(std::fs::read_to_string(fixture.db())? == text, "the file was changed");
    Ok(())
}

#[test]
fn a_missing_directory_is_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    let path = fixture.dir.path().join("no-such-dir").join("sync.db");
    let message = open_error(&path)?;
    ensure!(message.contains(&path.display().to_string()), "no path in {message:?}");
    Ok(())
}

#[test]
fn a_schema_newer_than_the_build_is_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    drop(fixture.open()?);
    fixture.raw()?.pragma_update(None, "user_version", 999)?;
    let message = open_error(&fixture.db())?;
    ensure!(message.contains("999"), "no version in {message:?}");
    Ok(())
}

#[test]
fn the_file_is_created_in_wal_mode_with_the_schema() -> Result<()> {
    let fixture = Fixture::new()?;
    let store = fixture.open()?;
    ensure!(store.path() == fixture.db());
    let raw = fixture.raw()?;
    let mode: String = raw.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    ensure!(mode == "wal", "journal mode {mode}");
    let mut tables: Vec<String> = raw
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tables.sort();
    let expected = [
        "acl_rules",
        "acl_versions",
        "api_credentials",
        "change_events",
        "client_cursors",
        "documents",
        "tokens",
        "users",
    ];
    ensure!(tables == expected, "tables {tables:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn open_url_accepts_sqlite_urls() -> Result<()> {
    let fixture = Fixture::new()?;
    let url = format!("sqlite://{}?mode=rwc", fixture.db().display());
    let store = SqliteStore::open_url(&url).context("open_url")?;
    ensure!(store.path() == fixture.db(), "{} from {url}", store.path().display());
    store.ping().await?;
    drop(store);
    let store = SqliteStore::open_url(&format!("sqlite:{}", fixture.db().display()))?;
    store.ping().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_close_and_reopen() -> Result<()> {
    let fixture = Fixture::new()?;
    let store = fixture.open()?;
    let first = create("ada", "doc-1", json!({"title": "kept", "n": 1.5}));
    let second = update(&first.document, json!({"title": "kept", "n": 2}));
    let other = create("ada", "doc-2", json!(["x"]));
    store.append_batch(vec![first, other.clone()]).await?;
    let last = store.append_batch(vec![second.clone()]).await?;
    let credential = ApiCredential {
        api_key: "rpa_kept".to_owned(),
        name: "kept".to_owned(),
        is_admin: true,
        created_at: 1,
        revoked_at: None,
    };
    store.create_api_credential(credential.clone()).await?;
    let token = TokenRecord {
        id: "tok-kept".to_owned(),
        user_id: "ada".to_owned(),
        hash: "$argon2id$kept".to_owned(),
        is_admin: false,
        created_at: 2,
        expires_at: Some(3),
    };
    store.create_token(token.clone()).await?;
    let stats = store.stats().await?;
    drop(store);

    let store = fixture.open()?;
    let documents = store.load_documents(vec!["doc-1".to_owned(), "doc-2".to_owned()]).await?;
    ensure!(
        documents == vec![(*second.document).clone(), (*other.document).clone()],
        "documents after reopen: {documents:?}"
    );
    ensure!(store.latest_sequence().await? == last[0], "latest sequence after reopen");
    ensure!(store.stats().await? == stats, "stats after reopen");
    ensure!(store.get_api_credential(credential.api_key.clone()).await? == Some(credential));
    ensure!(store.get_token(token.id.clone()).await? == Some(token));
    let events = store.changes_since(ReadScope::owner_only("ada"), 0, 10, None).await?;
    ensure!(events.events.len() == 3, "events after reopen: {:?}", events.events);

    // The counter continues from the file, without a gap or a reuse.
    let third = update(&second.document, json!({"n": 3}));
    let next = store.append_batch(vec![third]).await?;
    ensure!(next == vec![last[0] + 1], "first sequence after reopen: {next:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_tasks_get_unique_gap_free_sequences() -> Result<()> {
    const TASKS: usize = 16;
    const BATCHES: usize = 25;
    const CHANGES: usize = 4;
    let fixture = Fixture::new()?;
    let store = Arc::new(fixture.open()?);

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut assigned = Vec::new();
            for batch in 0..BATCHES {
                let changes = (0..CHANGES)
                    .map(|i| create(&format!("user-{task}"), &format!("doc-{task}-{batch}-{i}"), json!({"i": i})))
                    .collect();
                assigned.push(store.append_batch(changes).await?);
            }
            Ok::<_, StoreError>(assigned)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        for sequences in task.await?? {
            let first = sequences[0];
            ensure!(sequences == (first..first + CHANGES as u64).collect::<Vec<_>>(), "batch not consecutive");
            all.extend(sequences);
        }
    }
    all.sort_unstable();
    let total = (TASKS * BATCHES * CHANGES) as u64;
    ensure!(all == (1..=total).collect::<Vec<_>>(), "sequences are not unique and gap-free");
    ensure!(store.latest_sequence().await? == total);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_never_moves_back() -> Result<()> {
    let fixture = Fixture::new()?;
    let store = fixture.open()?;
    let stored = || -> Result<i64> {
        let sql = "SELECT sequence FROM client_cursors WHERE user_id = 'ada' AND client_id = 'phone'";
        Ok(fixture.raw()?.query_row(sql, [], |r| r.get(0))?)
    };
    store.ack_cursor("ada".to_owned(), "phone".to_owned(), 10).await?;
    ensure!(stored()? == 10);
    store.ack_cursor("ada".to_owned(), "phone".to_owned(), 5).await?;
    ensure!(stored()? == 10, "a lower acknowledgement moved the cursor back");
    store.ack_cursor("ada".to_owned(), "phone".to_owned(), 12).await?;
    ensure!(stored()? == 12);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_rows_are_reported_with_their_id() -> Result<()> {
    let fixture = Fixture::new()?;
    let store = fixture.open()?;
    store.append_batch(vec![create("ada", "doc-bad", json!({"a": 1}))]).await?;
    let raw = fixture.raw()?;
    raw.execute("UPDATE documents SET content = '{\"a\": ' WHERE id = 'doc-bad'", [])?;
    raw.execute("UPDATE change_events SET forward_patch = 'not json' WHERE document_id = 'doc-bad'", [])?;

    conformance::damaged_rows_are_reported(&store, "ada", "doc-bad", 1).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn migration_0002_makes_the_authors_of_older_changes_their_owners() -> Result<()> {
    let fixture = Fixture::new()?;
    {
        let raw = fixture.raw()?;
        raw.execute_batch(include_str!("../../migrations/sqlite/0001_initial.sql"))?;
        raw.pragma_update(None, "user_version", 1)?;
        raw.execute(
            "INSERT INTO acl_rules VALUES (0, 'bob', 'doc:tasks/*', 'read', 1), (1, '*', 'x-*', 'update', 0)",
            [],
        )?;
        for (sequence, change) in (1..).zip(changes_before_owners()) {
            let (d, e) = (&change.document, &change.event);
            raw.execute(
                "INSERT OR REPLACE INTO documents (id, user_id, collection, title, content, sync_revision, \
                 vector_clock, content_hash, created_at, updated_at, deleted_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)",
                rusqlite::params![
                    d.id,
                    d.user_id,
                    d.collection,
                    d.title,
                    json_text(&d.content),
                    d.sync_revision as i64,
                    json_text(&d.vector_clock),
                    d.content_hash,
                    d.created_at.unix_millis(),
                    d.updated_at.unix_millis(),
                ],
            )?;
            raw.execute(
                "INSERT INTO change_events (sequence, event_id, document_id, collection, user_id, client_id, \
                 event_type, forward_patch, reverse_patch, sync_revision, created_at, client_change_id, content_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, NULL, ?12)",
                rusqlite::params![
                    sequence,
                    e.event_id,
                    e.document_id,
                    e.collection,
                    e.user_id,
                    e.client_id,
                    e.event_type.as_str(),
                    e.forward_patch.as_ref().map(json_text),
                    e.reverse_patch.as_ref().map(json_text),
                    e.sync_revision as i64,
                    e.created_at.unix_millis(),
                    e.content_hash,
                ],
            )?;
        }
    }
    let store = fixture.open()?;
    let raw = fixture.raw()?;
    let version: i64 = raw.pragma_query_value(None, "user_version", |r| r.get(0))?;
    ensure!(version == 4, "schema version {version}");
    let owners = |raw: &rusqlite::Connection| -> Result<Vec<(i64, String, String)>> {
        let mut statement = raw.prepare("SELECT sequence, user_id, owner_id FROM change_events ORDER BY sequence")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let pair = |s: i64, author: &str, owner: &str| (s, author.to_owned(), owner.to_owned());
    let backfilled = vec![pair(1, "ada", "ada"), pair(2, "bob", "bob"), pair(3, "ada", "ada")];
    ensure!(owners(&raw)? == backfilled, "owners after the migration: {:?}", owners(&raw)?);
    let not_null: bool =
        raw.query_row("SELECT \"notnull\" FROM pragma_table_info('change_events') WHERE name = 'owner_id'", [], |r| {
            r.get(0)
        })?;
    ensure!(not_null, "owner_id may be NULL");
    let mut indexes: Vec<String> = raw
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    indexes.sort();
    let expected = [
        "change_events_client_change",
        "change_events_collection_sequence",
        "change_events_document_revision",
        "change_events_owner_sequence",
        "change_events_sequence_names",
        "documents_collection_id",
        "documents_user_id",
    ];
    ensure!(indexes == expected, "indexes {indexes:?}");

    // 0003 starts the history of rules with the list in force, at the newest sequence:
    // a cursor at or before it is beyond the history.
    let rules = sync_core::acl::Acl::from_json(&json!([
        {"user": "bob", "item": "doc:tasks/*", "action": "read", "allow": true},
        {"user": "*", "item": "x-*", "action": "update", "allow": false},
    ]))?;
    ensure!(store.get_acl().await? == rules, "the rules survive the migrations");
    ensure!(store.acl_since(3).await? == AclSince::BeyondHistory(vec![rules.clone()]), "history at 3");
    ensure!(store.acl_since(4).await? == AclSince::Unchanged, "history after 3");

    conformance::changes_from_before_owners_are_their_authors(&store).await;
    let mut expected = backfilled;
    expected.push(pair(4, "bob", "ada"));
    ensure!(owners(&raw)? == expected, "a change by bob to ada's document: {:?}", owners(&raw)?);
    Ok(())
}

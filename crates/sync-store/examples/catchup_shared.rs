//! Catch-up of a reader of shared documents, at the store: how fast `changes_since`
//! pages through a large log for a reader who may read many documents of others, and for
//! one who may read none (docs/BENCHMARKS.md, "Catch-up of a reader of shared documents
//! (store level)").
//!
//! The log holds `--total` creates of documents of 100 owners, dealt round-robin to 10
//! teams (collection `team-T`, ids `tT-N`): team 7's documents are spread evenly through
//! the whole log. The reader owns nothing and reads team 7 through one rule, written two
//! ways: `doc:team-7/*` (a collection) and `t7-*` (an id prefix, any collection). A
//! second reader has no rule. Each reads from sequence 0 in pages of `--page` until
//! `has_more` is false, `--runs` times.
//!
//! ```sh
//! cargo run --release -p sync-store --example catchup_shared -- --backend sqlite --total 1000000
//! cargo run --release -p sync-store --example catchup_shared -- --backend postgres --total 1000000
//! ```
//!
//! `--db PATH` keeps the SQLite file between invocations (it is loaded once); PostgreSQL
//! is a private server of the test kit (`fsync` on), loaded on every invocation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use sync_core::acl::{Acl, Rule};
use sync_store::postgres::{PgOptions, PgStore};
use sync_store::sqlite::SqliteStore;
use sync_store::{ReadScope, Store, conformance};
use sync_testkit::{PgServer, PgSettings};

/// Teams the documents are dealt to; the reader reads one.
const TEAMS: u64 = 10;
/// Owners of the documents.
const OWNERS: u64 = 100;
/// Creates per `append_batch` while loading.
const LOAD_BATCH: u64 = 5_000;

struct Args {
    backend: String,
    total: u64,
    page: usize,
    runs: usize,
    db: Option<PathBuf>,
}

fn parse() -> Result<Args> {
    let mut args = Args { backend: "sqlite".into(), total: 1_000_000, page: 500, runs: 3, db: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = value()?,
            "--total" => args.total = value()?.parse()?,
            "--page" => args.page = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--db" => args.db = Some(value()?.into()),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse()?;
    match args.backend.as_str() {
        "sqlite" => {
            let dir = tempfile::tempdir()?;
            let path = args.db.clone().unwrap_or_else(|| dir.path().join("catchup.db"));
            let store = SqliteStore::open(&path)?;
            measure(&store, &args).await
        }
        "postgres" => {
            let server = PgServer::start_private(PgSettings::durable())?;
            let url = server.create_database().await?;
            let store = PgStore::open(&url, PgOptions::default()).await?;
            measure(&store, &args).await?;
            // Once more after ANALYZE, as a database that autovacuum has caught up with.
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
            sqlx::query("ANALYZE").execute(&mut conn).await?;
            println!("after ANALYZE:");
            measure(&store, &args).await
        }
        other => bail!("unknown backend {other} (sqlite or postgres)"),
    }
}

async fn measure<S: Store>(store: &S, args: &Args) -> Result<()> {
    load(store, args.total).await?;
    // Documents n with n % 10 == 7.
    let shared = args.total / TEAMS + u64::from(args.total % TEAMS > 7);
    let readers = [
        ("collection rule doc:team-7/*", ruled("reader", "doc:team-7/*")?),
        ("id prefix rule t7-*", ruled("reader", "t7-*")?),
        ("no rule", ReadScope::owner_only("reader")),
    ];
    for (name, scope) in readers {
        let expected = if name == "no rule" { 0 } else { shared };
        let mut rates = Vec::new();
        let mut seconds = Vec::new();
        let mut calls = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            let (count, made) = catch_up(store, &scope, args.page).await?;
            let elapsed = started.elapsed().as_secs_f64();
            ensure!(count == expected, "{name}: read {count} changes, expected {expected}");
            calls = made;
            seconds.push(elapsed);
            rates.push(count as f64 / elapsed);
        }
        let each: Vec<String> = seconds.iter().map(|s| format!("{s:.3}")).collect();
        let (median, low, high) = spread(&mut seconds);
        print!("{name}: {expected} changes in {calls} calls, {:.3} s ({:.3}–{:.3})", median, low, high);
        if expected > 0 {
            let (median, low, high) = spread(&mut rates);
            print!(", {median:.0} docs/s ({low:.0}–{high:.0})");
        }
        println!("; runs in order: {} s", each.join(", "));
    }
    Ok(())
}

/// Median, min and max.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0], values[values.len() - 1])
}

/// Pages through the whole feed; returns the changes read and the calls made.
async fn catch_up<S: Store>(store: &S, scope: &ReadScope, page: usize) -> Result<(u64, u64)> {
    let (mut after, mut count, mut calls) = (0, 0, 0);
    loop {
        let result = store.changes_since(scope.clone(), after, page, None).await?;
        calls += 1;
        count += result.events.len() as u64;
        after = result.reached;
        if !result.has_more {
            return Ok((count, calls));
        }
    }
}

fn ruled(reader: &str, item: &str) -> Result<ReadScope> {
    let rule = Rule::parse(reader, item, "read", true).map_err(anyhow::Error::msg)?;
    Ok(ReadScope { view: Arc::new(Acl::new(vec![rule])?.read_view(reader)) })
}

/// Creates `total` documents, unless the store already holds them.
async fn load<S: Store>(store: &S, total: u64) -> Result<()> {
    let have = store.latest_sequence().await?;
    if have == total {
        return Ok(());
    }
    ensure!(have == 0, "the database holds {have} changes, not 0 or {total}");
    let started = Instant::now();
    let mut next = 0;
    while next < total {
        let end = (next + LOAD_BATCH).min(total);
        let batch = (next..end)
            .map(|n| {
                let team = n % TEAMS;
                let owner = format!("owner-{}", n % OWNERS);
                let content = json!({"title": format!("task {n}"), "done": false, "notes": "x".repeat(120)});
                conformance::create(&owner, &format!("team-{team}"), &format!("t{team}-{n}"), content)
            })
            .collect();
        store.append_batch(batch).await?;
        next = end;
    }
    println!("loaded {total} changes in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

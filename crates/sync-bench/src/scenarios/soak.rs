//! `soak`: kill -9 / restart cycles of a private server under write load, bounded in
//! time. Each cycle, writers patch their own documents as fast as the server
//! acknowledges; after a random up-time the server is killed with SIGKILL and started
//! again on the same database; then the log is read from where the previous check
//! ended, and the run fails unless the log continues gap-free, every document's
//! revisions continue gap-free, and every change acknowledged in the cycle is in the log
//! with its sequence, document, revision, `client_change_id` and value.
//!
//! Not a benchmark (it runs as `scripts/soak.sh`, by hand, not in CI): its figures are
//! the cycles run, the changes acknowledged and read back, and the losses, which must
//! be 0. The random up-times come from a seed that is printed, so a failure replays.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};
use sync_testkit::ServerProcess;

use crate::client::{BenchClient, Credentials};
use crate::report::{Report, round};

/// Parameters of the soak.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct SoakArgs {
    /// How long to run: no new cycle starts after this.
    #[arg(long, default_value_t = 120)]
    pub(crate) seconds: u64,
    /// Concurrent writers (one connection and one document each).
    #[arg(long, default_value_t = 8)]
    pub(crate) writers: usize,
    /// Shortest up-time of a cycle, in milliseconds, counted once writes are acknowledged.
    #[arg(long, default_value_t = 500)]
    pub(crate) min_up_ms: u64,
    /// Longest up-time of a cycle, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    pub(crate) max_up_ms: u64,
    /// Seed of the up-times (default: the clock; printed either way).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

/// One acknowledged change.
#[derive(Clone, Debug)]
struct Acked {
    sequence: u64,
    document_id: String,
    revision: u64,
    client_change_id: String,
    value: u64,
}

/// What the checks have established so far.
#[derive(Default)]
struct Verified {
    /// The log is checked gap-free up to here.
    through: u64,
    /// The newest revision seen in the log of each document.
    revisions: HashMap<String, u64>,
    /// Changes acknowledged, in all cycles.
    acked: u64,
    /// Events read back from the log.
    logged: u64,
}

/// Runs the soak on a private SQLite server (the one `server` started).
pub(crate) async fn run(mut server: ServerProcess, backend: &str, args: &SoakArgs) -> anyhow::Result<Report> {
    ensure!(args.writers > 0, "--writers must be at least 1");
    ensure!(args.min_up_ms <= args.max_up_ms, "--min-up-ms must not exceed --max-up-ms");
    let seed = args.seed.unwrap_or_else(|| sync_core::Timestamp::now().unix_millis() as u64);
    println!(
        "soak: {} s, {} writers, up-time {}..{} ms, seed {seed}",
        args.seconds, args.writers, args.min_up_ms, args.max_up_ms
    );
    let mut random = SplitMix(seed);
    let credentials = Credentials { api_key: server.api_key.clone(), secret: server.secret.clone() };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut verified = Verified::default();
    let mut next_value = vec![1u64; args.writers];
    let mut created = create_documents(&server.ws_url(), &credentials, args.writers).await?;
    let mut cycles = 0u64;
    while Instant::now() < deadline {
        cycles += 1;
        let url = server.ws_url();
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(args.writers);
        for (w, value) in next_value.iter().enumerate() {
            let writer = Writer { url: url.clone(), credentials: credentials.clone(), w, first_value: *value };
            tasks.push(tokio::spawn(writer.run(Arc::clone(&acks), Arc::clone(&stop))));
        }
        // The up-time counts from the first acknowledgement, so that every cycle kills
        // the server under load, however long the writers took to connect.
        let loaded = Instant::now();
        while acks.load(Ordering::Relaxed) == 0 {
            ensure!(loaded.elapsed() < Duration::from_secs(30), "cycle {cycles}: no write acknowledged within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let up = args.min_up_ms + random.below(args.max_up_ms - args.min_up_ms + 1);
        tokio::time::sleep(Duration::from_millis(up)).await;

        // SIGKILL mid-load, then the same database and port again.
        tokio::task::block_in_place(|| server.restart()).with_context(|| format!("cycle {cycles}: restarting"))?;
        stop.store(true, Ordering::Release);
        let mut acked = std::mem::take(&mut created);
        for (w, task) in tasks.into_iter().enumerate() {
            let (mine, next) = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .with_context(|| format!("cycle {cycles}: writer {w} did not end"))?
                .context("writer task")??;
            next_value[w] = next;
            acked.extend(mine);
        }
        check(&server.ws_url(), &credentials, &mut verified, &acked)
            .await
            .with_context(|| format!("cycle {cycles} (seed {seed})"))?;
        println!(
            "cycle {cycles}: up {up} ms, {} acknowledged, log checked through {}, 0 lost",
            acked.len(),
            verified.through
        );
    }

    let seconds = start.elapsed().as_secs_f64();
    let mut report = Report::new("soak", backend);
    report
        .param("seconds", args.seconds)
        .param("writers", args.writers as u64)
        .param("up_ms", format!("{}..{}", args.min_up_ms, args.max_up_ms))
        .param("seed", seed);
    report
        .figure("cycles", cycles)
        .figure("changes_acknowledged", verified.acked)
        .figure("changes_in_log", verified.logged)
        .figure("acknowledged_lost", 0)
        .figure("sequence_gaps", 0)
        .figure("elapsed_s", round(seconds));
    Ok(report)
}

/// Reads the log after `verified.through` and checks it against the changes acknowledged
/// since: gap-free sequences and revisions, and every acknowledged change present as it
/// was acknowledged.
async fn check(url: &str, credentials: &Credentials, verified: &mut Verified, acked: &[Acked]) -> anyhow::Result<()> {
    let mut client = BenchClient::connect(url, None, false).await?;
    client.authenticate(credentials, "soak@bench.local", None).await?;
    let mut events: HashMap<u64, Value> = HashMap::new();
    let mut after = verified.through;
    loop {
        let request = json!({"type": "get_changes_since", "last_sequence": after, "limit": 5000, "request_id": "page"});
        client.send(&request).await?;
        let page = loop {
            let message = client.recv(Duration::from_secs(60)).await?;
            if message["request_id"] == "page" {
                break message;
            }
        };
        ensure!(page["type"] == "changes", "get_changes_since answered {page}");
        for event in page["events"].as_array().context("events")? {
            let sequence = event["sequence"].as_u64().context("sequence")?;
            ensure!(sequence == after + 1, "the log skips from {after} to {sequence}");
            after = sequence;
            let document = event["document_id"].as_str().context("document_id")?.to_owned();
            let revision = event["sync_revision"].as_u64().context("sync_revision")?;
            let previous = verified.revisions.insert(document.clone(), revision).unwrap_or(0);
            ensure!(revision == previous + 1, "{document}: revision {revision} follows {previous}");
            events.insert(sequence, event.clone());
        }
        if page["has_more"] != true {
            break;
        }
    }
    verified.logged += events.len() as u64;
    verified.through = after;
    for change in acked {
        let Some(event) = events.get(&change.sequence) else {
            bail!("acknowledged change lost: {change:?} (the log ends at {after})");
        };
        // A create's forward patch is the content; an update's, the ops.
        let written =
            if change.revision == 1 { &event["forward_patch"]["n"] } else { &event["forward_patch"][0]["value"] };
        let same = event["document_id"] == change.document_id.as_str()
            && event["sync_revision"] == change.revision
            && event["client_change_id"] == change.client_change_id.as_str()
            && *written == change.value;
        ensure!(same, "acknowledged change {change:?} differs in the log: {event}");
    }
    verified.acked += acked.len() as u64;
    Ok(())
}

/// One writer of a cycle: patches `soak-<w>` until its connection dies or the cycle stops.
struct Writer {
    url: String,
    credentials: Credentials,
    w: usize,
    /// The value of its first change (values never repeat across cycles; 0 was the
    /// document's creation).
    first_value: u64,
}

impl Writer {
    /// Returns what was acknowledged and the next unused value.
    async fn run(self, acks: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> anyhow::Result<(Vec<Acked>, u64)> {
        let Writer { url, credentials, w, first_value } = self;
        let document_id = format!("soak-{w}");
        let mut acked = Vec::new();
        let mut value = first_value;
        // The server may still be starting after the previous kill.
        let connected = Instant::now();
        let mut client = loop {
            match connect(&url, &credentials).await {
                Ok(client) => break client,
                Err(e) if connected.elapsed() > Duration::from_secs(30) => return Err(e.context("connecting")),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        while !stop.load(Ordering::Acquire) {
            // Two changes per frame, so the server also sees batches and group commits.
            let frame = json!([change(&document_id, value), change(&document_id, value + 1)]);
            // Values sent are never sent again, answered or not: a resent one would be
            // answered with its first result (its `client_change_id`), from an earlier cycle.
            value += 2;
            if client.send(&frame).await.is_err() {
                break;
            }
            let mut answered = 0;
            while answered < 2 {
                let Ok(reply) = client.recv(Duration::from_secs(30)).await else { break };
                if reply["type"] != "document_updated_response" {
                    continue;
                }
                let v = reply["request_id"].as_u64().context("request_id")?;
                ensure!(reply["success"] == true, "{document_id}: change {v} refused: {reply}");
                acked.push(acknowledged(&reply, &document_id, v)?);
                acks.fetch_add(1, Ordering::Relaxed);
                answered += 1;
            }
            if answered < 2 {
                break;
            }
        }
        Ok((acked, value))
    }
}

/// Creates the writers' documents (`{"n": 0}`), before the first cycle.
async fn create_documents(url: &str, credentials: &Credentials, writers: usize) -> anyhow::Result<Vec<Acked>> {
    let mut client = connect(url, credentials).await?;
    let mut created = Vec::with_capacity(writers);
    for w in 0..writers {
        let document_id = format!("soak-{w}");
        let create = json!({"type": "create_document", "document": {"id": document_id, "content": {"n": 0}},
            "client_change_id": format!("{document_id}-0")});
        client.send(&create).await?;
        let reply = client.recv_type("document_created_response", Duration::from_secs(30)).await?;
        ensure!(reply["success"] == true, "{document_id}: create refused: {reply}");
        created.push(acknowledged(&reply, &document_id, 0)?);
    }
    Ok(created)
}

async fn connect(url: &str, credentials: &Credentials) -> anyhow::Result<BenchClient> {
    let mut client = BenchClient::connect(url, None, false).await?;
    client.authenticate(credentials, "soak@bench.local", None).await?;
    Ok(client)
}

/// The update that sets `/n` to `value`; its `request_id` is the value.
fn change(document_id: &str, value: u64) -> Value {
    json!({"type": "update_document", "request_id": value, "patch": {
        "document_id": document_id,
        "patch": [{"op": "replace", "path": "/n", "value": value}],
        "client_change_id": format!("{document_id}-{value}"),
    }})
}

fn acknowledged(reply: &Value, document_id: &str, value: u64) -> anyhow::Result<Acked> {
    Ok(Acked {
        sequence: reply["sequence"].as_u64().context("sequence")?,
        document_id: document_id.to_owned(),
        revision: reply["sync_revision"].as_u64().context("sync_revision")?,
        client_change_id: format!("{document_id}-{value}"),
        value,
    })
}

/// SplitMix64: enough randomness for up-times, from a seed that replays.
struct SplitMix(u64);

impl SplitMix {
    /// A number below `bound` (which must be positive).
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E9B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

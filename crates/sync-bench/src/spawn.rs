//! `--spawn postgres`: a private PostgreSQL (the test kit's, with PostgreSQL's default
//! durability settings: `fsync=on`, `synchronous_commit=on`) and one or more
//! `sync-server` processes sharing one database, removed after the run.

use anyhow::Context;
use sync_testkit::{PgServer, PgSettings, ServerProcess};

/// Server processes on one private PostgreSQL database; everything stops on drop.
pub(crate) struct PostgresCluster {
    /// The server processes, in start order (dropped before the database).
    pub(crate) servers: Vec<ServerProcess>,
    /// The database server.
    _database: PgServer,
}

impl PostgresCluster {
    /// Starts PostgreSQL, creates a database, and starts `servers` server processes on
    /// it with `env`, one after the other (the first applies the migrations).
    pub(crate) async fn start(servers: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let database = PgServer::start_private(PgSettings::durable()).context("starting a private PostgreSQL")?;
        let url = database.create_database().await?;
        let servers = (0..servers.max(1))
            .map(|_| ServerProcess::start(&url, None, env))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("starting sync-server on PostgreSQL")?;
        Ok(Self { servers, _database: database })
    }
}

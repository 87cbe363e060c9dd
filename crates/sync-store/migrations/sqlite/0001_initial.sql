-- 0001: the initial schema.
--
-- Migrations are added, never edited: a database that ran this file must never see it
-- change. A new column or index goes into 0002_*.sql, listed after this one in
-- `MIGRATIONS` in src/sqlite.rs.
--
-- Timestamps are unix milliseconds; content, vector clocks and patches are JSON text.
-- STRICT makes SQLite refuse a value of the wrong type instead of storing it silently.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT,
    created_at INTEGER NOT NULL
) STRICT;

-- The secret of a credential is derived from the server key and the API key, so it is
-- never stored.
CREATE TABLE api_credentials (
    api_key TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    is_admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

-- Only the Argon2id hash of a token's secret part is stored.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT;

CREATE TABLE documents (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    title TEXT,
    content TEXT NOT NULL,
    sync_revision INTEGER NOT NULL,
    vector_clock TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted_at INTEGER
) STRICT;

-- list_documents pages through one user's documents in id order.
CREATE INDEX documents_user_id ON documents (user_id, id);

-- `sequence` is the rowid: the server-wide commit order, assigned by the writer.
CREATE TABLE change_events (
    sequence INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    forward_patch TEXT,
    reverse_patch TEXT,
    sync_revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    client_change_id TEXT,
    content_hash TEXT
) STRICT;

-- changes_since reads one user's log in sequence order.
CREATE INDEX change_events_user_sequence ON change_events (user_id, sequence);
-- One event per document revision: a second writer of the same revision is refused.
CREATE UNIQUE INDEX change_events_document_revision ON change_events (document_id, sync_revision);
-- A client's retry of a committed change is recognised, and never stored twice.
CREATE UNIQUE INDEX change_events_client_change ON change_events (user_id, client_change_id)
    WHERE client_change_id IS NOT NULL;

CREATE TABLE client_cursors (
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
) STRICT;

-- Not used yet; created now so that access control needs no schema change.
CREATE TABLE acl_rules (
    position INTEGER PRIMARY KEY,
    user_pattern TEXT NOT NULL,
    item TEXT NOT NULL,
    action TEXT NOT NULL,
    allow INTEGER NOT NULL
) STRICT;

-- 0001: the initial PostgreSQL schema (the same tables as migrations/sqlite/0001).
--
-- Migrations are added, never edited: sqlx records a checksum of every applied file and
-- refuses to start when one changed. A new column or index goes into 0002_*.sql, listed
-- after this one in `MIGRATIONS` in src/postgres.rs.
--
-- Timestamps are unix milliseconds (BIGINT); content, vector clocks and patches are
-- JSONB. Identifiers use the "C" collation: byte order, as in SQLite, whatever the
-- database's locale, so `list_documents` pages in the same order on both backends, and
-- comparisons skip the locale's rules.

CREATE TABLE users (
    id TEXT COLLATE "C" PRIMARY KEY,
    email TEXT,
    created_at BIGINT NOT NULL
);

-- The secret of a credential is derived from the server key and the API key, so it is
-- never stored.
CREATE TABLE api_credentials (
    api_key TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    is_admin BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Only the Argon2id hash of a token's secret part is stored.
CREATE TABLE tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    hash TEXT NOT NULL,
    is_admin BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);

-- Every update rewrites the row; room left on each page lets PostgreSQL put the new
-- version beside the old one without touching the indexes (a HOT update), since no
-- indexed column changes.
CREATE TABLE documents (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    title TEXT,
    content JSONB NOT NULL,
    sync_revision BIGINT NOT NULL,
    vector_clock JSONB NOT NULL,
    content_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
) WITH (fillfactor = 70);

-- list_documents pages through one user's documents in id order.
CREATE INDEX documents_user_id ON documents (user_id, id);

-- `sequence` is the server-wide commit order. It is not a SEQUENCE (or IDENTITY): those
-- hand out numbers at insert time, so a transaction that commits later can hold a lower
-- number, and a reader would see a gap that fills afterwards. The store takes the numbers
-- from the counter row below instead, locked until the transaction commits.
CREATE TABLE change_events (
    sequence BIGINT PRIMARY KEY,
    event_id TEXT COLLATE "C" NOT NULL UNIQUE,
    document_id TEXT COLLATE "C" NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    client_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    forward_patch JSONB,
    reverse_patch JSONB,
    sync_revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    client_change_id TEXT COLLATE "C",
    content_hash TEXT
);

-- The change feed: changes_since reads one user's log in sequence order.
CREATE INDEX change_events_user_sequence ON change_events (user_id, sequence);
-- One event per document revision: a second writer of the same revision is refused.
CREATE UNIQUE INDEX change_events_document_revision ON change_events (document_id, sync_revision);
-- A client's retry of a committed change is recognised, and never stored twice.
CREATE UNIQUE INDEX change_events_client_change ON change_events (user_id, client_change_id)
    WHERE client_change_id IS NOT NULL;

-- No query filters or sorts by a JSON value, so ANALYZE need not sample them: sorting
-- JSONB samples was a visible share of the database's CPU under write load.
ALTER TABLE documents ALTER COLUMN content SET STATISTICS 0, ALTER COLUMN vector_clock SET STATISTICS 0;
ALTER TABLE change_events ALTER COLUMN forward_patch SET STATISTICS 0, ALTER COLUMN reverse_patch SET STATISTICS 0;

CREATE TABLE client_cursors (
    user_id TEXT COLLATE "C" NOT NULL,
    client_id TEXT COLLATE "C" NOT NULL,
    sequence BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- Not used yet; created now so that access control needs no schema change.
CREATE TABLE acl_rules (
    position BIGINT PRIMARY KEY,
    user_pattern TEXT NOT NULL,
    item TEXT NOT NULL,
    action TEXT NOT NULL,
    allow BOOLEAN NOT NULL
);

-- `change_events` holds the newest committed sequence. Every append updates it in the
-- transaction that inserts its events, and the row lock it takes is held until that
-- transaction commits: appends from every process take their numbers one after another,
-- in commit order, with no gaps. The row is updated many times a second, so its page is
-- kept nearly empty for HOT updates.
CREATE TABLE counters (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
) WITH (fillfactor = 10);

INSERT INTO counters (name, value) VALUES ('change_events', 0);

-- Aborts an append whose expected revisions did not hold (`ids` names the documents;
-- NULL when every one held). Raising an error is what rolls the whole statement back:
-- the append is one statement in its own transaction, so that it costs one round trip
-- and holds the counter lock only while the server works, never while a reply travels.
CREATE FUNCTION sync_refuse_moved(ids TEXT[]) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF ids IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'SY409',
            MESSAGE = 'documents changed concurrently',
            DETAIL = array_to_json(ids)::text;
    END IF;
    RETURN TRUE;
END
$$;

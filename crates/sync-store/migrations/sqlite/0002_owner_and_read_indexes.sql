-- 0002: who owns the document of each change, and the indexes a reader of shared
-- documents reads through.
--
-- `change_events.user_id` is the author of a change. Until now the author was always
-- the document's owner; with sharing, another user may change a document, and a reader's
-- change feed is chosen by the owner (and by collection and id), so the owner gets a
-- column of its own. Existing rows were all written by their owners: the owner is the
-- author.
--
-- SQLite cannot add a NOT NULL column without a default, and a default would let an
-- insert that forgets the owner store a wrong one, so the table is rebuilt (SQLite's
-- documented procedure: create, copy, drop, rename). The copy rewrites the log once, as
-- an UPDATE of a new column would; it runs in the migration's transaction, so the WAL
-- grows by about the size of the log while it runs.

CREATE TABLE change_events_0002 (
    sequence INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    user_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    forward_patch TEXT,
    reverse_patch TEXT,
    sync_revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    client_change_id TEXT,
    content_hash TEXT
) STRICT;

INSERT INTO change_events_0002 (sequence, event_id, document_id, collection, user_id, owner_id, client_id,
                                event_type, forward_patch, reverse_patch, sync_revision, created_at,
                                client_change_id, content_hash)
SELECT sequence, event_id, document_id, collection, user_id, user_id, client_id, event_type, forward_patch,
       reverse_patch, sync_revision, created_at, client_change_id, content_hash
FROM change_events ORDER BY sequence;

-- Dropping the table drops its indexes, change_events_user_sequence among them: the
-- feed is read by owner now, and find_client_changes (by author) uses the unique
-- (user_id, client_change_id) index.
DROP TABLE change_events;
ALTER TABLE change_events_0002 RENAME TO change_events;

-- One event per document revision: a second writer of the same revision is refused.
-- Also the index a share of one document (or of ids with a prefix) reads through.
CREATE UNIQUE INDEX change_events_document_revision ON change_events (document_id, sync_revision);
-- A client's retry of a committed change is recognised, and never stored twice.
CREATE UNIQUE INDEX change_events_client_change ON change_events (user_id, client_change_id)
    WHERE client_change_id IS NOT NULL;
-- changes_since reads a reader's own documents' changes in sequence order.
CREATE INDEX change_events_owner_sequence ON change_events (owner_id, sequence);
-- ... and the changes of a shared collection, in sequence order.
CREATE INDEX change_events_collection_sequence ON change_events (collection, sequence);

-- list_documents pages through a shared collection in id order (documents_user_id,
-- from 0001, serves the reader's own).
CREATE INDEX documents_collection_id ON documents (collection, id);

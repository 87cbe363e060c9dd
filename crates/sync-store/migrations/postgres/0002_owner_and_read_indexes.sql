-- 0002: who owns the document of each change, and the indexes a reader of shared
-- documents reads through (the same as migrations/sqlite/0002).
--
-- `change_events.user_id` is the author of a change. Until now the author was always
-- the document's owner; with sharing, another user may change a document, and a reader's
-- change feed is chosen by the owner (and by collection and id), so the owner gets a
-- column of its own. Existing rows were all written by their owners: the owner is the
-- author.
--
-- The backfill rewrites every row of the log once, in the migration's transaction; the
-- old row versions are reclaimed by the next (auto)vacuum.
--
-- Prefix shares (`task-*`) are read as ranges (`document_id >= 'task-' AND document_id
-- < 'task.'`): every identifier column uses the "C" collation (0001), so byte order is
-- the order of these btree indexes whatever the database's locale, and no pattern
-- operator class is needed.

ALTER TABLE change_events ADD COLUMN owner_id TEXT COLLATE "C";
UPDATE change_events SET owner_id = user_id;
ALTER TABLE change_events ALTER COLUMN owner_id SET NOT NULL;

-- changes_since reads a reader's own documents' changes in sequence order ...
CREATE INDEX change_events_owner_sequence ON change_events (owner_id, sequence);
-- ... and the changes of a shared collection, in sequence order.
CREATE INDEX change_events_collection_sequence ON change_events (collection, sequence);
-- The feed is read by owner now, and find_client_changes (by author) uses the unique
-- (user_id, client_change_id) index.
DROP INDEX change_events_user_sequence;

-- list_documents pages through a shared collection in id order (documents_user_id,
-- from 0001, serves the reader's own).
CREATE INDEX documents_collection_id ON documents (collection, id);

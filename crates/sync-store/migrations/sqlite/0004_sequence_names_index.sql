-- 0004: the log in sequence order with the names a share matches (SQLite only).
--
-- A share of an id prefix over every collection (`task-*`), or of a collection prefix
-- (`doc:team*`), is a range of `change_events_document_revision` or of
-- `change_events_collection_sequence`, neither in sequence order: a change feed call
-- read the whole range and sorted it, so a catch-up cost the square of the reader's
-- share. When such a share is dense in the log, the feed now scans the log in sequence
-- order instead (sqlite/queries.rs), through this index: about 40 bytes a change where
-- the table's rows hold the patches, and appended at its right edge by every commit.
-- PostgreSQL reads these shares well enough without it (docs/BENCHMARKS.md).

CREATE INDEX change_events_sequence_names ON change_events (sequence, collection, document_id);

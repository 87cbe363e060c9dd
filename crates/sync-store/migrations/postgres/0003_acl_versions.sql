-- 0003: a bounded history of the access rules (the same as migrations/sqlite/0003), so
-- that a session resuming from a sequence can be told what the rules changed while it
-- was away (PROTOCOL.md §8).
--
-- One row per list ever stored by `set_acl`, written in the transaction that replaces
-- `acl_rules`: `version` counts the lists, `sequence` is the newest committed sequence
-- when the list was stored (every change at or below it was committed under an earlier
-- list), `rules` the list as `PUT /acl` takes it (a JSON array, as text: it is read
-- whole, never queried). `set_acl` deletes the oldest rows beyond a count and a total
-- size (sync_store::ACL_HISTORY_*), always keeping the newest.
--
-- The list in force now is the first row. Its sequence is the newest in the log, or -1
-- when the log is empty: then these rules (none, in a new database) are the ones every
-- change was decided by. In a database that has changes, what came before is unknown,
-- and a session resuming from before it is treated as beyond the history.

CREATE TABLE acl_versions (
    version BIGINT PRIMARY KEY,
    sequence BIGINT NOT NULL,
    rules TEXT NOT NULL
);

INSERT INTO acl_versions (version, sequence, rules)
SELECT 1,
       COALESCE((SELECT MAX(sequence) FROM change_events), -1),
       COALESCE(
           (SELECT json_agg(json_build_object('user', user_pattern, 'item', item, 'action', action, 'allow', allow)
                            ORDER BY position)::text
            FROM acl_rules),
           '[]');

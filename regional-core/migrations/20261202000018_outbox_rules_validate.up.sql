-- The rows written before 20261202000017, checked against outbox_row. In its own migration (its own
-- transaction), so the scan takes only a SHARE UPDATE EXCLUSIVE lock: writers go on meanwhile.
ALTER TABLE outbox VALIDATE CONSTRAINT outbox_row;

-- What an outbox row is, defined once for every statement that writes one (bus::outbox, and the
-- three single-statement writers that build their payload in SQL: order.created at checkout, the
-- payment events of the saga, ticket.checked_in at the gate): a known topic, a non-empty key, and a
-- payload naming its type at schema version 1. Added NOT VALID (new rows are checked from now on,
-- the lock is held for an instant) and validated in the next migration, in a transaction of its
-- own, which scans the existing rows without blocking writers. (A missing field makes the test NULL, which a CHECK
-- would let pass: hence the COALESCE.)
ALTER TABLE outbox
    ADD CONSTRAINT outbox_row CHECK (COALESCE(
        topic IN ('orders', 'payments', 'tickets', 'checkins')
        AND key <> ''
        AND jsonb_typeof(payload -> 'type') = 'string'
        AND payload -> 'schema_version' = '1'::jsonb,
        false)) NOT VALID;

-- The relay polls instead of being woken: PostgreSQL serializes the commits of every transaction
-- that issued NOTIFY (one queue lock), which halved checkout's throughput under load.
DROP TRIGGER outbox_wake ON outbox;
DROP FUNCTION outbox_wake();

DROP TABLE ticket_transfers;
DROP TRIGGER outbox_wake ON outbox;
DROP FUNCTION outbox_wake();
ALTER TABLE events DROP COLUMN reminders_queued_at;
DROP TABLE notifications;
DROP TABLE consumed_messages;

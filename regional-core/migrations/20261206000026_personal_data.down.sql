DELETE FROM notifications WHERE kind = 'sign_in_link';
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('order_confirmation',
    'order_cancelled', 'order_refunded', 'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued',
    'waitlist_offer', 'webhook_disabled'));
DROP TABLE sign_in_requests;
DROP INDEX outbox_sent;
DROP INDEX notifications_created;
DROP INDEX notifications_event;
DROP INDEX ticket_transfers_event;
DROP INDEX orders_cancelled_not_erased;
ALTER TABLE events DROP COLUMN personal_data_erased_at;
DROP INDEX tickets_erase_requested;
DROP INDEX orders_erase_requested;
DROP INDEX ticket_transfers_erase_requested;
ALTER TABLE ticket_transfers DROP COLUMN erase_requested_at;
ALTER TABLE tickets DROP COLUMN erase_requested_at;
ALTER TABLE orders DROP COLUMN erase_requested_at;
ALTER TABLE tickets DROP COLUMN erased_at;
ALTER TABLE orders DROP COLUMN erased_at;
DROP INDEX notifications_recipient;
DROP INDEX ticket_transfers_from_email;
DROP INDEX ticket_transfers_to_email;
DROP INDEX tickets_holder_email;
DROP INDEX orders_email;
DROP FUNCTION erased_address(UUID);

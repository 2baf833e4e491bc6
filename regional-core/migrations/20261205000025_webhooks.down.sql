DELETE FROM notifications WHERE kind = 'webhook_disabled';
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('order_confirmation',
    'order_cancelled', 'order_refunded', 'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued',
    'waitlist_offer'));
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;

-- How far the core has read each event's waiting list for offers to mail (the position in the
-- list's history at the edge); moved in the transaction that queues the mails it read.
CREATE TABLE waitlist_cursors (
    event_id UUID PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A new kind of mail: a waiting list's offer.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('order_confirmation',
    'order_cancelled', 'order_refunded', 'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued',
    'waitlist_offer'));

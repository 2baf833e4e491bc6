-- The outbox's consumers and notifications.
--
-- A consumer applies each message once: its effect and the row below are written in one
-- transaction, so a redelivered message (a relay restarted mid-batch, a consumer rebalanced before
-- it committed its offset) changes nothing the second time.
CREATE TABLE consumed_messages (
    consumer    TEXT NOT NULL,
    message_id  BIGINT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- E-mail to send: rendered when queued (from the templates), sent by the sender with retries.
CREATE TABLE notifications (
    id              UUID PRIMARY KEY,
    -- One mail per purpose, ever: the message that caused it and its kind (or the reminder's order).
    dedup_key       TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('order_confirmation', 'order_cancelled', 'order_refunded',
                        'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued')),
    recipient       TEXT NOT NULL CHECK (length(recipient) BETWEEN 3 AND 254),
    subject         TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    -- Tickets whose QR codes are attached, drawn when sent (so that a re-issued code is current).
    ticket_ids      UUID[] NOT NULL DEFAULT '{}',
    order_id        UUID,
    event_id        UUID,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'parked')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_parked ON notifications (created_at) WHERE state = 'parked';
-- The per-recipient rate cap counts what was sent in the last hour.
CREATE INDEX notifications_recipient_sent ON notifications (recipient, sent_at) WHERE state = 'sent';

-- Reminders: which events have had theirs queued.
ALTER TABLE events ADD COLUMN reminders_queued_at TIMESTAMPTZ;

-- Wakes the relay when outbox rows commit (it also polls, so a lost notification only delays).
CREATE FUNCTION outbox_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_wake AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_wake();

-- Tickets offered by e-mail and accepted by their recipient (no secret is stored: the link carries
-- a token signed by the core).
CREATE TABLE ticket_transfers (
    id          UUID PRIMARY KEY,
    ticket_id   UUID NOT NULL REFERENCES tickets (id),
    order_id    UUID NOT NULL REFERENCES orders (id),
    event_id    UUID NOT NULL REFERENCES events (id),
    from_email  TEXT NOT NULL,
    to_email    TEXT NOT NULL CHECK (length(to_email) BETWEEN 3 AND 254),
    state       TEXT NOT NULL DEFAULT 'offered'
                CHECK (state IN ('offered', 'accepted', 'declined', 'cancelled', 'expired')),
    expires_at  TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at  TIMESTAMPTZ
);
-- One open offer per ticket.
CREATE UNIQUE INDEX ticket_transfers_one_open ON ticket_transfers (ticket_id) WHERE state = 'offered';

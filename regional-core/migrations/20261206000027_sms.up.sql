-- SMS (docs/sms.md): a phone number a buyer gives at checkout (or a giver for a transfer's
-- recipient), the texts sent to it with their delivery status, and the numbers that opted out.
-- Numbers are E.164: '+' and 7 to 15 digits, no leading zero.
ALTER TABLE orders ADD COLUMN phone TEXT CHECK (phone ~ '^\+[1-9][0-9]{6,14}$');
ALTER TABLE ticket_transfers ADD COLUMN to_phone TEXT CHECK (to_phone ~ '^\+[1-9][0-9]{6,14}$');

CREATE TABLE sms_messages (
    id              UUID PRIMARY KEY,
    -- One text per purpose, ever (as mails).
    dedup_key       TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('order_confirmation', 'event_reminder', 'transfer_offer')),
    recipient       TEXT NOT NULL CHECK (recipient ~ '^\+[1-9][0-9]{6,14}$'),
    body            TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 1600),
    order_id        UUID,
    event_id        UUID,
    -- pending → sent (the provider took it) → delivered | undelivered | failed (its reports);
    -- failed also when the provider refused it for good; suppressed when the number opted out.
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'sent', 'delivered', 'undelivered', 'failed', 'suppressed')),
    provider_sid    TEXT UNIQUE,
    provider_status TEXT,
    -- How far along provider_status is (sms::routes::rank): a report only moves a text forward.
    status_rank     SMALLINT NOT NULL DEFAULT 0,
    error_code      BIGINT,
    last_error      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until     TIMESTAMPTZ,
    -- Set by the sender that is about to hand the text to the provider, under a lock on the number:
    -- the per-number cap counts texts being sent by any core, not only those sent.
    sending_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    status_at       TIMESTAMPTZ
);
CREATE INDEX sms_messages_due ON sms_messages (next_attempt_at) WHERE state = 'pending';
-- The per-number daily cap counts what was sent in the last 24 hours; opt-outs suppress what waits.
CREATE INDEX sms_messages_recipient ON sms_messages (recipient, sent_at);
CREATE INDEX sms_messages_created ON sms_messages (created_at);
CREATE INDEX sms_messages_order ON sms_messages (order_id) WHERE order_id IS NOT NULL;

-- Texts people sent the shop's number, by the provider's id: a signed request replayed (Twilio's
-- signatures carry no time) changes nothing the second time. Kept 30 days.
CREATE TABLE sms_incoming (
    message_sid TEXT PRIMARY KEY CHECK (length(message_sid) BETWEEN 1 AND 64),
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Numbers that asked for no more texts (a STOP, or the provider's refusal of an unsubscribed
-- number), kept for as long as they stand: they are how the opt-out is honoured.
CREATE TABLE sms_opt_outs (
    phone        TEXT PRIMARY KEY CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
    source       TEXT NOT NULL CHECK (source IN ('keyword', 'provider')),
    opted_out_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

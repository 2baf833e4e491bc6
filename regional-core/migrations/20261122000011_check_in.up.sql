-- Check-in: when and where a ticket was used, and every scan (admitted or not) for the record.
ALTER TABLE tickets ADD COLUMN used_at TIMESTAMPTZ;
ALTER TABLE tickets ADD COLUMN used_gate TEXT;

CREATE TABLE check_ins (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    event_id    UUID NOT NULL,
    ticket_id   UUID,
    gate        TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (result IN ('admitted', 'already_used', 'refused')),
    reason      TEXT,
    scanner     UUID NOT NULL
);
CREATE INDEX check_ins_event_at ON check_ins (event_id, at);

-- Promo codes per event, and each event's refund policy.

CREATE TABLE promo_codes (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id),
    event_id         UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    code             TEXT NOT NULL CHECK (code ~ '^[A-Z0-9_-]{3,32}$'),
    kind             TEXT NOT NULL CHECK (kind IN ('percent', 'amount')),
    percent_off      INTEGER CHECK (percent_off BETWEEN 1 AND 100),
    amount_off_minor BIGINT CHECK (amount_off_minor > 0),
    currency         TEXT CHECK (currency ~ '^[A-Z]{3}$'),
    max_uses         INTEGER CHECK (max_uses > 0),
    uses             INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    per_buyer_limit  INTEGER CHECK (per_buyer_limit > 0),
    valid_from       TIMESTAMPTZ,
    valid_until      TIMESTAMPTZ,
    -- Empty: every tier of the event.
    tier_ids         UUID[] NOT NULL DEFAULT '{}',
    active           BOOLEAN NOT NULL DEFAULT true,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (event_id, code),
    CHECK ((kind = 'percent') = (percent_off IS NOT NULL)),
    CHECK ((kind = 'amount') = (amount_off_minor IS NOT NULL AND currency IS NOT NULL)),
    CHECK (max_uses IS NULL OR uses <= max_uses),
    CHECK (valid_until IS NULL OR valid_from IS NULL OR valid_until > valid_from)
);
CREATE INDEX promo_codes_event ON promo_codes (event_id, created_at, id);

-- Windows before the event's start: [{"hours_before": 168, "percent": 100}, {"hours_before": 24, "percent": 50}]
ALTER TABLE events ADD COLUMN refund_policy JSONB NOT NULL DEFAULT '[]';

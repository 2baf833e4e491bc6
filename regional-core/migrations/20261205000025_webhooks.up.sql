-- Partner webhooks (docs/webhooks.md): an organization's HTTPS endpoints, the deliveries made to
-- them (one per domain event and endpoint) and every attempt with its answer.

CREATE TABLE webhook_endpoints (
    id               UUID PRIMARY KEY,
    organization_id  UUID NOT NULL REFERENCES organizations (id),
    url              TEXT NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    description      TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    -- The domain events sent (`order.paid`, …): at least one.
    event_types      TEXT[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 32),
    -- The signing secret, sealed (AES-256-GCM) with the key `secret_key_id` of CORE_WEBHOOK_KEYS:
    -- never in plaintext. The previous secret signs too until `previous_until` (a rotation).
    secret_key_id    TEXT NOT NULL,
    secret_sealed    BYTEA NOT NULL,
    previous_key_id  TEXT,
    previous_sealed  BYTEA,
    previous_until   TIMESTAMPTZ,
    enabled          BOOLEAN NOT NULL DEFAULT true,
    -- Why it was disabled: `failing` (by the dispatcher after a long failure) or `by_user`.
    disabled_reason  TEXT CHECK (disabled_reason IN ('failing', 'by_user')),
    disabled_at      TIMESTAMPTZ,
    -- Since when every attempt failed (NULL after a success): a long failure disables it.
    failing_since    TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (enabled = (disabled_reason IS NULL))
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (organization_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id              UUID PRIMARY KEY,
    endpoint_id     UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    -- The domain event's outbox id: one delivery per event and endpoint (none for a test ping).
    outbox_id       BIGINT,
    event_type      TEXT NOT NULL,
    -- The exact body signed and sent (the Standard Webhooks `{type, timestamp, data}`).
    body            TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'succeeded', 'failed')),
    -- Attempts in this round (a replay starts a new round); every attempt is in webhook_attempts.
    tries           INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is due.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- An attempt in flight: the dispatcher's claim and until when it holds it. Only the claim's
    -- holder records the outcome; a claim whose lease ended may be taken by another core.
    claim           UUID,
    lease_until     TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, outbox_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_pending_endpoint ON webhook_deliveries (endpoint_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);

CREATE TABLE webhook_attempts (
    id           BIGSERIAL PRIMARY KEY,
    delivery_id  UUID NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    duration_ms  INTEGER NOT NULL,
    -- The HTTP status, when an answer came; its first 2 KiB.
    status       INTEGER,
    response     TEXT CHECK (length(response) <= 2048),
    -- Why no usable answer came (timeout, refused address, …).
    error        TEXT CHECK (length(error) <= 500),
    succeeded    BOOLEAN NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);

-- A new kind of mail: an endpoint disabled after a long failure, to the organization's admins.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('order_confirmation',
    'order_cancelled', 'order_refunded', 'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued',
    'waitlist_offer', 'webhook_disabled'));

-- Checkout: orders (the saga's persisted state machine), their lines, payments, refunds, the
-- webhooks seen, tickets (with PostgreSQL's second line of defence against a double sale), the
-- transactional outbox, the append-only state audit, and the built-in test payment provider.

-- Fees and tax per event (see docs/checkout.md for the arithmetic and its rounding).
ALTER TABLE events ADD COLUMN pricing JSONB NOT NULL DEFAULT '{}';

CREATE TABLE orders (
    id                UUID PRIMARY KEY,
    organization_id   UUID NOT NULL REFERENCES organizations (id),
    event_id          UUID NOT NULL REFERENCES events (id),
    visitor_id        TEXT NOT NULL,
    -- One order per hold, ever: a hold token cannot buy twice.
    hold_id           TEXT NOT NULL UNIQUE,
    idempotency_key   TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash      TEXT NOT NULL,
    email             TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    state             TEXT NOT NULL CHECK (state IN ('created', 'awaiting_payment', 'confirming', 'paid',
                          'releasing', 'cancelled', 'refunding', 'refunded')),
    currency          TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    subtotal_minor    BIGINT NOT NULL CHECK (subtotal_minor >= 0),
    discount_minor    BIGINT NOT NULL CHECK (discount_minor >= 0),
    fee_minor         BIGINT NOT NULL CHECK (fee_minor >= 0),
    tax_minor         BIGINT NOT NULL CHECK (tax_minor >= 0),
    -- Prices already include the tax (shown, not added).
    tax_included      BOOLEAN NOT NULL DEFAULT false,
    total_minor       BIGINT NOT NULL CHECK (total_minor >= 0),
    promo_code_id     UUID REFERENCES promo_codes (id),
    -- When the hold (extended for payment) expires at the edge: the payment deadline.
    hold_expires_at   TIMESTAMPTZ NOT NULL,
    -- Why the order ended the way it did (payment_failed, abandoned, hold_lost, buyer_cancelled, event_cancelled).
    outcome           TEXT,
    refund_minor      BIGINT NOT NULL DEFAULT 0 CHECK (refund_minor >= 0),
    -- After a refund of a paid order: give the seats back to sale, or take them off sale.
    seats_after_refund TEXT NOT NULL DEFAULT 'return' CHECK (seats_after_refund IN ('return', 'off_sale')),
    -- The reconciler: when to look at this order next, how often it failed, and why.
    next_attempt_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until       TIMESTAMPTZ,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (visitor_id, idempotency_key),
    CHECK (total_minor = subtotal_minor - discount_minor + fee_minor + CASE WHEN tax_included THEN 0 ELSE tax_minor END),
    CHECK (refund_minor <= total_minor)
);
CREATE INDEX orders_event_created ON orders (event_id, created_at, id);
CREATE INDEX orders_org_created ON orders (organization_id, created_at, id);
CREATE INDEX orders_unfinished ON orders (next_attempt_at)
    WHERE state IN ('created', 'awaiting_payment', 'confirming', 'releasing', 'refunding');

CREATE TABLE order_lines (
    order_id      UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line          INTEGER NOT NULL CHECK (line >= 0),
    tier_id       UUID NOT NULL REFERENCES ticket_tiers (id),
    seat_id       TEXT,
    zone_id       TEXT,
    price_minor   BIGINT NOT NULL CHECK (price_minor >= 0),
    discount_minor BIGINT NOT NULL CHECK (discount_minor >= 0),
    fee_minor     BIGINT NOT NULL CHECK (fee_minor >= 0),
    tax_minor     BIGINT NOT NULL CHECK (tax_minor >= 0),
    PRIMARY KEY (order_id, line)
);

CREATE TABLE payments (
    id            UUID PRIMARY KEY,
    order_id      UUID NOT NULL UNIQUE REFERENCES orders (id),
    provider      TEXT NOT NULL CHECK (provider IN ('testpay', 'stripe')),
    provider_ref  TEXT,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency      TEXT NOT NULL,
    -- What the buyer needs to pay: a page to open (test provider) or a client secret (Stripe).
    redirect_url  TEXT,
    client_secret TEXT,
    refunded_minor BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_ref)
);

CREATE TABLE refunds (
    id            UUID PRIMARY KEY,
    order_id      UUID NOT NULL UNIQUE REFERENCES orders (id),
    payment_id    UUID NOT NULL REFERENCES payments (id),
    amount_minor  BIGINT NOT NULL CHECK (amount_minor >= 0),
    reason        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    provider_ref  TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every provider event seen, once: a duplicate delivery is recognized and changes nothing.
CREATE TABLE webhook_events (
    provider      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    provider_ref  TEXT,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

CREATE TABLE tickets (
    id            UUID PRIMARY KEY,
    order_id      UUID NOT NULL REFERENCES orders (id),
    organization_id UUID NOT NULL REFERENCES organizations (id),
    event_id      UUID NOT NULL REFERENCES events (id),
    tier_id       UUID NOT NULL REFERENCES ticket_tiers (id),
    seat_id       TEXT,
    holder_email  TEXT NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    state         TEXT NOT NULL DEFAULT 'valid' CHECK (state IN ('valid', 'void', 'used')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX tickets_order ON tickets (order_id);
CREATE INDEX tickets_event ON tickets (event_id, created_at, id);
-- The second line of defence: a seat has at most one live ticket.
CREATE UNIQUE INDEX tickets_one_live_per_seat ON tickets (event_id, seat_id)
    WHERE seat_id IS NOT NULL AND state <> 'void';

-- Domain events, written in the same transaction as the change; a relay publishes them.
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    topic         TEXT NOT NULL,
    key           TEXT NOT NULL,
    payload       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at       TIMESTAMPTZ
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Every state change of an order, payment or refund: who, what, when, from which state to which.
CREATE TABLE state_audit (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('order', 'payment', 'refund')),
    subject_id    UUID NOT NULL,
    order_id      UUID NOT NULL,
    actor         TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    details       JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX state_audit_order ON state_audit (order_id, id);

CREATE FUNCTION state_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'state_audit is append-only';
END $$;
CREATE TRIGGER state_audit_no_change BEFORE UPDATE OR DELETE ON state_audit
    FOR EACH ROW EXECUTE FUNCTION state_audit_append_only();
CREATE TRIGGER state_audit_no_truncate BEFORE TRUNCATE ON state_audit
    FOR EACH STATEMENT EXECUTE FUNCTION state_audit_append_only();

-- The built-in test provider's own books (it plays a remote provider inside the core process).
CREATE TABLE testpay_payments (
    id            TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_minor  BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    reference     TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('requires_payment', 'processing', 'succeeded', 'failed', 'canceled')),
    refunded_minor BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE testpay_refunds (
    id            TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payment_id    TEXT NOT NULL REFERENCES testpay_payments (id),
    amount_minor  BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Webhook deliveries it owes the merchant: retried with backoff until acknowledged.
CREATE TABLE testpay_deliveries (
    id            BIGSERIAL PRIMARY KEY,
    event_id      TEXT NOT NULL,
    payload       JSONB NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at  TIMESTAMPTZ,
    last_error    TEXT
);
CREATE INDEX testpay_deliveries_due ON testpay_deliveries (next_attempt_at) WHERE delivered_at IS NULL;

-- Reporting's projections (docs/reporting.md), maintained by the `reporting` outbox consumer in the
-- transaction that records each message as consumed: reports read a few rows per event and
-- minute, whatever the number of orders.

-- Money and tickets per tier and minute (the minute the order was paid, or refunded).
CREATE TABLE report_tier_minute (
    event_id          UUID NOT NULL,
    tier_id           UUID NOT NULL,
    minute            TIMESTAMPTZ NOT NULL,
    tickets_sold      INTEGER NOT NULL DEFAULT 0,
    tickets_refunded  INTEGER NOT NULL DEFAULT 0,
    -- What buyers paid for these tickets (line price − discount + fee + tax when added).
    gross_minor       BIGINT NOT NULL DEFAULT 0,
    discount_minor    BIGINT NOT NULL DEFAULT 0,
    fee_minor         BIGINT NOT NULL DEFAULT 0,
    tax_minor         BIGINT NOT NULL DEFAULT 0,
    refunded_minor    BIGINT NOT NULL DEFAULT 0,
    -- The part of the refunds that gave fees back (refunds return ticket money first).
    fee_refunded_minor BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, tier_id, minute)
);

-- Orders per event and minute: created, paid, cancelled (of which abandoned), refunded.
CREATE TABLE report_event_minute (
    event_id          UUID NOT NULL,
    minute            TIMESTAMPTZ NOT NULL,
    orders_created    INTEGER NOT NULL DEFAULT 0,
    orders_paid       INTEGER NOT NULL DEFAULT 0,
    orders_cancelled  INTEGER NOT NULL DEFAULT 0,
    orders_abandoned  INTEGER NOT NULL DEFAULT 0,
    orders_refunded   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, minute)
);

-- Promo codes on paid orders.
CREATE TABLE report_promo (
    event_id          UUID NOT NULL,
    promo_code_id     UUID NOT NULL,
    orders            INTEGER NOT NULL DEFAULT 0,
    discount_minor    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (event_id, promo_code_id)
);

-- The box office (docs/box-office.md): holds it placed for walk-up buyers, orders it sold and
-- who sold them, payments taken at the counter.

-- Every hold a box-office clerk placed: a sale may only sell one of these (never a buyer's hold),
-- and a clerk has at most a few live at once.
CREATE TABLE box_office_holds (
    hold_id          TEXT PRIMARY KEY,
    event_id         UUID NOT NULL REFERENCES events (id),
    organization_id  UUID NOT NULL REFERENCES organizations (id),
    -- The clerk (a user id; no foreign key: an erased staff account leaves its sales).
    user_id          UUID NOT NULL,
    visitor_id       TEXT NOT NULL CHECK (visitor_id LIKE 'box-office\_%'),
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    expires_at       TIMESTAMPTZ NOT NULL,
    -- Sold or released: no longer the clerk's to count.
    ended_at         TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX box_office_holds_live ON box_office_holds (user_id, expires_at) WHERE ended_at IS NULL;
CREATE INDEX box_office_holds_event ON box_office_holds (event_id);

-- Who sold an order at the counter (none: sold online).
ALTER TABLE orders ADD COLUMN sold_by UUID;

-- Money taken at the counter: cash, or a card on the venue's own terminal (its receipt number).
ALTER TABLE payments DROP CONSTRAINT payments_provider_check;
ALTER TABLE payments ADD CONSTRAINT payments_provider_check CHECK (provider IN ('testpay', 'stripe', 'box_office'));
ALTER TABLE payments ADD COLUMN method TEXT CHECK (method IN ('cash', 'card_present'));
-- The terminal's receipt number of a card taken at the counter (the operator's reconciliation).
ALTER TABLE payments ADD COLUMN counter_reference TEXT CHECK (length(counter_reference) BETWEEN 1 AND 64);
ALTER TABLE payments ADD CONSTRAINT payments_box_office_method CHECK ((provider = 'box_office') = (method IS NOT NULL));

-- The catalog: venues with their seat maps (one row per seat, so that the database itself keeps
-- seats unique), events with their state machine, and ticket tiers. Money is integer minor units.

CREATE TABLE venues (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    city            TEXT NOT NULL DEFAULT '' CHECK (length(city) <= 100),
    address         TEXT NOT NULL DEFAULT '' CHECK (length(address) <= 500),
    time_zone       TEXT NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
    -- Sections (id, name, row order), price zones (id, name) and GA areas (id, name, capacity).
    sections        JSONB NOT NULL DEFAULT '[]',
    zones           JSONB NOT NULL DEFAULT '[]',
    ga_areas        JSONB NOT NULL DEFAULT '[]',
    seat_count      INTEGER NOT NULL DEFAULT 0 CHECK (seat_count >= 0),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX venues_org_created ON venues (organization_id, created_at, id);

CREATE TABLE venue_seats (
    venue_id    UUID NOT NULL REFERENCES venues (id) ON DELETE CASCADE,
    seat_id     TEXT NOT NULL CHECK (seat_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    section_id  TEXT NOT NULL,
    row_label   TEXT NOT NULL,
    label       TEXT NOT NULL,
    position    INTEGER NOT NULL CHECK (position >= 0),
    x           REAL NOT NULL,
    y           REAL NOT NULL,
    zone_id     TEXT NOT NULL,
    accessibility TEXT[] NOT NULL DEFAULT '{}',
    aisle_after BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (venue_id, seat_id),
    -- No two seats share a place in a section.
    UNIQUE (venue_id, section_id, row_label, label)
);
CREATE INDEX venue_seats_order ON venue_seats (venue_id, position);

CREATE TABLE events (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    venue_id        UUID NOT NULL REFERENCES venues (id),
    title           TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description     TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 20000),
    genre           TEXT NOT NULL DEFAULT '' CHECK (length(genre) <= 50),
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL,
    time_zone       TEXT NOT NULL CHECK (length(time_zone) BETWEEN 1 AND 64),
    images          JSONB NOT NULL DEFAULT '[]',
    state           TEXT NOT NULL DEFAULT 'draft'
                    CHECK (state IN ('draft', 'published', 'on_sale', 'sold_out', 'cancelled', 'completed')),
    version         BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX events_org_created ON events (organization_id, created_at, id);
CREATE INDEX events_public ON events (state, starts_at) WHERE state IN ('published', 'on_sale', 'sold_out');

CREATE TABLE ticket_tiers (
    id              UUID PRIMARY KEY,
    event_id        UUID NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- `seated`: the venue's seats, priced by zone; `ga`: places in one GA area.
    kind            TEXT NOT NULL CHECK (kind IN ('seated', 'ga')),
    ga_area         TEXT,
    currency        TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    price_minor     BIGINT NOT NULL CHECK (price_minor >= 0),
    -- Seated tiers: price per zone id (minor units), overriding `price_minor`.
    zone_prices     JSONB NOT NULL DEFAULT '{}',
    quantity        INTEGER NOT NULL CHECK (quantity >= 0),
    per_order_limit INTEGER NOT NULL DEFAULT 8 CHECK (per_order_limit BETWEEN 1 AND 100),
    sale_starts_at  TIMESTAMPTZ,
    sale_ends_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'ga') = (ga_area IS NOT NULL)),
    CHECK (sale_ends_at IS NULL OR sale_starts_at IS NULL OR sale_ends_at > sale_starts_at)
);
CREATE INDEX ticket_tiers_event ON ticket_tiers (event_id, created_at, id);

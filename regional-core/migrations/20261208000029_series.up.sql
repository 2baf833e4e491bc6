-- Event series (docs/series.md): a tour, a season, a museum's daily slots. Each date is an event
-- of its own (its inventory, its line, its orders); the series names them together and keeps the
-- event its new dates are copied from.
CREATE TABLE event_series (
    id                UUID PRIMARY KEY,
    organization_id   UUID NOT NULL REFERENCES organizations (id),
    title             TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    -- The date new dates copy (venue, texts, tiers and prices, settings, refund policy).
    template_event_id UUID NOT NULL REFERENCES events (id),
    -- `relative`: a new date's sale windows and on-sale times keep their distance to its start;
    -- `fixed`: they are the template's own times (a tour's dates all going on sale at once).
    sale_windows      TEXT NOT NULL DEFAULT 'relative' CHECK (sale_windows IN ('relative', 'fixed')),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX event_series_org_created ON event_series (organization_id, created_at, id);

ALTER TABLE events ADD COLUMN series_id UUID REFERENCES event_series (id);
-- One date of a series at one start: adding dates again adds none twice (a cancelled date leaves
-- its start free for a new one).
CREATE UNIQUE INDEX events_series_start ON events (series_id, starts_at) WHERE series_id IS NOT NULL AND state <> 'cancelled';
-- The catalog's dates of a series (its listed ones, by start; their end for "not over"): a
-- series' first date a search finds, and how many it lists, without reading the events' rows.
CREATE INDEX events_series_listed ON events (series_id, starts_at, id) INCLUDE (ends_at)
    WHERE state IN ('published', 'on_sale', 'sold_out') AND series_id IS NOT NULL;

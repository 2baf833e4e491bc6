-- Publishing to the edge: the settings an event sends along with its inventory, and, per event, the
-- version the edge should hold, the version it acknowledged, and the retry state of the push.

ALTER TABLE events ADD COLUMN waiting_room JSONB NOT NULL DEFAULT '{}';
ALTER TABLE events ADD COLUMN hold_settings JSONB NOT NULL DEFAULT '{}';

CREATE TABLE edge_sync (
    event_id        UUID PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    wanted_version  BIGINT NOT NULL CHECK (wanted_version >= 1),
    synced_version  BIGINT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'synced', 'failing')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      TEXT,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    synced_at       TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX edge_sync_due ON edge_sync (next_attempt_at) WHERE state <> 'synced';

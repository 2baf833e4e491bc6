-- When each scanner fetched its offline list of an event (ValidCodes). An offline scan of an earlier
-- version of a ticket counts only when the list that scanner had at the scan's time was fetched
-- before the next version began: a scanner key cannot backdate a scan past what its list held.
CREATE TABLE scanner_lists (
    event_id    UUID NOT NULL REFERENCES events (id),
    user_id     UUID NOT NULL REFERENCES users (id),
    fetched_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, user_id, fetched_at)
);

DROP INDEX events_series_listed;
DROP INDEX events_series_start;
ALTER TABLE events DROP COLUMN series_id;
DROP TABLE event_series;

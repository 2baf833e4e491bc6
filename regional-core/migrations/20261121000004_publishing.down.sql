DROP TABLE edge_sync;
ALTER TABLE events DROP COLUMN hold_settings;
ALTER TABLE events DROP COLUMN waiting_room;

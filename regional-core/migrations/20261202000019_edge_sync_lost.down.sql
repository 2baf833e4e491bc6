UPDATE edge_sync SET state = 'failing' WHERE state = 'lost';
ALTER TABLE edge_sync DROP CONSTRAINT edge_sync_state_check;
ALTER TABLE edge_sync ADD CONSTRAINT edge_sync_state_check CHECK (state IN ('pending', 'synced', 'failing'));

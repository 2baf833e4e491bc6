-- An event the edge no longer holds although it has orders: pushing its definition again would put
-- what the edge had sold back on sale, so the core stops pushing it and says so ('lost').
ALTER TABLE edge_sync DROP CONSTRAINT edge_sync_state_check;
ALTER TABLE edge_sync ADD CONSTRAINT edge_sync_state_check CHECK (state IN ('pending', 'synced', 'failing', 'lost'));

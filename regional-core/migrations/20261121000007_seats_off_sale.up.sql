-- Seats an organizer took off sale for one event (seat ids of its venue). The edge keeps a hold or
-- sale on such a seat; it is never held again.
ALTER TABLE events ADD COLUMN off_sale_seats JSONB NOT NULL DEFAULT '[]';

ALTER TABLE events DROP COLUMN off_sale_seats;

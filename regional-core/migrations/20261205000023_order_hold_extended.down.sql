ALTER TABLE orders DROP COLUMN hold_extended;

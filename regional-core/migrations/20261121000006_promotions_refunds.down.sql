ALTER TABLE events DROP COLUMN refund_policy;
DROP TABLE promo_codes;

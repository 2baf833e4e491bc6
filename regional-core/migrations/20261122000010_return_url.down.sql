ALTER TABLE testpay_payments DROP COLUMN return_url;
ALTER TABLE orders DROP COLUMN return_url;

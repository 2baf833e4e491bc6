-- Where the buyer goes back to after paying (the edge's order page); the test provider links to it.
ALTER TABLE orders ADD COLUMN return_url TEXT CHECK (length(return_url) <= 500);
ALTER TABLE testpay_payments ADD COLUMN return_url TEXT;

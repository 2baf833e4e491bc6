-- What the buyer sees on the provider's page, fixed when the order is made: a retried payment
-- creation sends the same parameters with the same idempotency key (Stripe refuses others).
ALTER TABLE orders ADD COLUMN payment_description TEXT;

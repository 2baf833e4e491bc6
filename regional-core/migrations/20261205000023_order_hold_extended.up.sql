-- The hold came extended for payment (the edge extends it as it forwards the checkout, and says
-- so in the hold token it signs again): the saga starts the payment without asking the edge.
ALTER TABLE orders ADD COLUMN hold_extended BOOLEAN NOT NULL DEFAULT false;

-- Checkout's hot reads, each by index: a buyer's tickets for an event (the per-buyer cap, by visitor
-- or by e-mail), an event's orders by state (the sweep after an event's cancellation, reports), a
-- promo code's uses by e-mail.
CREATE INDEX orders_event_visitor ON orders (event_id, visitor_id);
CREATE INDEX orders_event_email ON orders (event_id, lower(email));
CREATE INDEX orders_event_state ON orders (event_id, state);
CREATE INDEX orders_promo_email ON orders (promo_code_id, lower(email)) WHERE promo_code_id IS NOT NULL;

DROP INDEX orders_promo_email;
DROP INDEX orders_event_state;
DROP INDEX orders_event_email;
DROP INDEX orders_event_visitor;

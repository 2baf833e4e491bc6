-- Personal data (docs/privacy.md): finding everything kept about an address, erasing it, the
-- retention job, and the buyers' sign-in links.

-- Everything about an address, by index (an access or erasure request, a sign-in link).
CREATE INDEX orders_email ON orders (lower(email));
CREATE INDEX tickets_holder_email ON tickets (lower(holder_email));
CREATE INDEX ticket_transfers_to_email ON ticket_transfers (lower(to_email));
CREATE INDEX ticket_transfers_from_email ON ticket_transfers (lower(from_email));
CREATE INDEX notifications_recipient ON notifications (lower(recipient));

-- What an erased address becomes: unique to its row (nothing links two erased rows), in the
-- `.invalid` domain (RFC 2606: never delivered; the core never mails it).
CREATE FUNCTION erased_address(row_id UUID) RETURNS TEXT LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'erased-' || row_id::text || '@erased.invalid' $$;

-- When the address was made anonymous (an erasure request, or the retention job).
ALTER TABLE orders ADD COLUMN erased_at TIMESTAMPTZ;
ALTER TABLE tickets ADD COLUMN erased_at TIMESTAMPTZ;
-- An erasure asked for while the event is still to come and its tickets kept valid: the address is
-- kept to deliver them and erased by the retention job once the event is over.
ALTER TABLE orders ADD COLUMN erase_requested_at TIMESTAMPTZ;
ALTER TABLE tickets ADD COLUMN erase_requested_at TIMESTAMPTZ;
-- The transfer that gave such a kept ticket to the person (its recipient's link reads it).
ALTER TABLE ticket_transfers ADD COLUMN erase_requested_at TIMESTAMPTZ;
CREATE INDEX orders_erase_requested ON orders (event_id) WHERE erase_requested_at IS NOT NULL AND erased_at IS NULL;
CREATE INDEX tickets_erase_requested ON tickets (event_id) WHERE erase_requested_at IS NOT NULL AND erased_at IS NULL;
CREATE INDEX ticket_transfers_erase_requested ON ticket_transfers (event_id) WHERE erase_requested_at IS NOT NULL;

-- The retention job's reads: events whose buyers' addresses are due (each done once), cancelled
-- orders (never paid) still carrying an address, old mails, sent messages.
ALTER TABLE events ADD COLUMN personal_data_erased_at TIMESTAMPTZ;
CREATE INDEX orders_cancelled_not_erased ON orders (updated_at) WHERE state = 'cancelled' AND erased_at IS NULL;
CREATE INDEX notifications_created ON notifications (created_at);
CREATE INDEX notifications_event ON notifications (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX ticket_transfers_event ON ticket_transfers (event_id);
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Sign-in link requests, for their rate limits only: a SHA-256 of the address and the client's
-- address, kept a day.
CREATE TABLE sign_in_requests (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    address_key TEXT NOT NULL,
    client      TEXT NOT NULL
);
CREATE INDEX sign_in_requests_address ON sign_in_requests (address_key, at);
CREATE INDEX sign_in_requests_client ON sign_in_requests (client, at);
CREATE INDEX sign_in_requests_at ON sign_in_requests (at);

-- A new kind of mail: the buyer's sign-in link.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('order_confirmation',
    'order_cancelled', 'order_refunded', 'hold_lost', 'transfer_offer', 'event_reminder', 'ticket_reissued',
    'waitlist_offer', 'webhook_disabled', 'sign_in_link'));

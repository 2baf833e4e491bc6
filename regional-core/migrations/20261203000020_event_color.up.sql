-- The event's colour on the buyer's pages (the waiting page's accent), `#rrggbb` in lower case.
ALTER TABLE events ADD COLUMN color TEXT CHECK (color ~ '^#[0-9a-f]{6}$');

DROP TABLE ticket_tiers;
DROP TABLE events;
DROP TABLE venue_seats;
DROP TABLE venues;

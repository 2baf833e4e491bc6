-- Buyers search published events by words of the title and description.
CREATE INDEX events_search ON events USING GIN (to_tsvector('simple', title || ' ' || description));
CREATE INDEX venues_city ON venues (lower(city));

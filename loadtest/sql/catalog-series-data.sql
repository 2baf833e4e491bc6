-- scripts/bench-catalog.sh's data: one organization and venue, 5,000 one-off events (every 3 h)
-- and 10 series of 2,000 dates (hourly), all on sale.
INSERT INTO organizations (id, name, slug, time_zone) VALUES ('00000000-0000-0000-0000-000000000001', 'Org', 'org', 'UTC');
INSERT INTO venues (id, organization_id, name, city, address, time_zone, zones, ga_areas)
  VALUES ('00000000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-000000000001', 'Hall', 'Berlin', 'x', 'UTC', '[]', '[]');
INSERT INTO events (id, organization_id, venue_id, title, starts_at, ends_at, time_zone, state)
  SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002', 'Event ' || i,
         now() + i * interval '3 hours', now() + i * interval '3 hours' + interval '2 hours', 'UTC', 'on_sale'
  FROM generate_series(1, 5000) i;
INSERT INTO events (id, organization_id, venue_id, title, starts_at, ends_at, time_zone, state)
  SELECT gen_random_uuid(), '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002', 'Template ' || s,
         now() + interval '1 hour' + s * interval '1 minute', now() + interval '2 hours', 'UTC', 'on_sale'
  FROM generate_series(1, 10) s;
INSERT INTO event_series (id, organization_id, title, template_event_id)
  SELECT gen_random_uuid(), organization_id, title, id FROM events WHERE title LIKE 'Template %';
UPDATE events e SET series_id = s.id FROM event_series s WHERE s.template_event_id = e.id;
INSERT INTO events (id, organization_id, venue_id, title, starts_at, ends_at, time_zone, state, series_id)
  SELECT gen_random_uuid(), organization_id, '00000000-0000-0000-0000-000000000002', title, at, at + interval '2 hours', 'UTC', 'on_sale', id
  FROM (SELECT s.*, now() + interval '1 hour' + i * interval '1 hour' + (row_number() OVER ()) * interval '1 second' AS at
        FROM event_series s CROSS JOIN generate_series(1, 1999) i) x;
VACUUM ANALYZE;

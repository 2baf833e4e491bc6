-- scripts/bench-catalog.sh's queries: regional-core/src/catalog.rs's `search` and `count_dates`.
PREPARE search(text, text, text, timestamptz, timestamptz, uuid, bool, timestamptz, uuid, int) AS
WITH firsts AS (
    SELECT f.id FROM event_series x CROSS JOIN LATERAL (
        SELECT d.id FROM events d WHERE d.series_id = x.id AND d.state IN ('published', 'on_sale', 'sold_out')
            AND ($1::text IS NULL OR to_tsvector('simple', d.title || ' ' || d.description) @@ plainto_tsquery('simple', $1))
            AND ($3::text IS NULL OR lower(d.genre) = lower($3))
            AND ($4::timestamptz IS NULL OR d.starts_at >= $4)
            AND ($4::timestamptz IS NOT NULL OR d.ends_at > now())
            AND ($5::timestamptz IS NULL OR d.starts_at < $5)
        ORDER BY d.starts_at, d.id LIMIT 1) f
    WHERE $7)
SELECT e.id, e.title, e.description, e.genre, e.starts_at, e.ends_at, e.time_zone, e.images, e.color,
    e.state, v.name AS venue_name, v.city, o.name AS organizer, e.series_id, s.title AS series_title, NULL::int8 AS series_dates
FROM events e JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = e.organization_id
    LEFT JOIN event_series s ON s.id = e.series_id
WHERE e.state IN ('published', 'on_sale', 'sold_out')
    AND ($1::text IS NULL OR to_tsvector('simple', e.title || ' ' || e.description) @@ plainto_tsquery('simple', $1))
    AND ($3::text IS NULL OR lower(e.genre) = lower($3))
    AND ($4::timestamptz IS NULL OR e.starts_at >= $4)
    AND ($4::timestamptz IS NOT NULL OR e.ends_at > now())
    AND ($5::timestamptz IS NULL OR e.starts_at < $5)
    AND ($2::text IS NULL OR lower(v.city) = lower($2))
    AND ($6::uuid IS NULL OR e.series_id = $6)
    AND (NOT $7 OR e.series_id IS NULL OR e.id IN (SELECT id FROM firsts))
    AND (e.starts_at, e.id) > ($8, $9)
ORDER BY e.starts_at, e.id LIMIT $10;
PREPARE counts(uuid[]) AS
SELECT series_id, count(*) FROM events WHERE series_id = ANY($1) AND state IN ('published', 'on_sale', 'sold_out') AND ends_at > now()
GROUP BY series_id;
-- The search as it was before series (for comparison).
PREPARE before_series(text, text, text, timestamptz, timestamptz, timestamptz, uuid, int) AS
SELECT e.id, e.title, e.description, e.genre, e.starts_at, e.ends_at, e.time_zone, e.images, e.color, e.state,
    v.name AS venue_name, v.city, o.name AS organizer
FROM events e JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = e.organization_id
WHERE e.state IN ('published', 'on_sale', 'sold_out')
    AND ($1::text IS NULL OR to_tsvector('simple', e.title || ' ' || e.description) @@ plainto_tsquery('simple', $1))
    AND ($2::text IS NULL OR lower(v.city) = lower($2))
    AND ($3::text IS NULL OR lower(e.genre) = lower($3))
    AND ($4::timestamptz IS NULL OR e.starts_at >= $4)
    AND ($4::timestamptz IS NOT NULL OR e.ends_at > now())
    AND ($5::timestamptz IS NULL OR e.starts_at < $5)
    AND (e.starts_at, e.id) > ($6, $7)
ORDER BY e.starts_at, e.id LIMIT $8;
SELECT array_agg(id)::text AS ids FROM event_series \gset
\timing on
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, false, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, false, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, false, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, false, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, false, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search(NULL, NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search('Template', NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search('Template', NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search('Template', NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search('Template', NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE search('Template', NULL, NULL, NULL, NULL, NULL, true, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE counts(:'ids');
EXECUTE counts(:'ids');
EXECUTE counts(:'ids');
EXECUTE counts(:'ids');
EXECUTE counts(:'ids');
EXECUTE before_series(NULL, NULL, NULL, NULL, NULL, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE before_series(NULL, NULL, NULL, NULL, NULL, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE before_series(NULL, NULL, NULL, NULL, NULL, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE before_series(NULL, NULL, NULL, NULL, NULL, 'epoch', '00000000-0000-0000-0000-000000000000', 25);
EXECUTE before_series(NULL, NULL, NULL, NULL, NULL, 'epoch', '00000000-0000-0000-0000-000000000000', 25);

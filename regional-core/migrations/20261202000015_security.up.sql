-- Security review (docs/security.md).

-- Only platform admins belong to the platform organization, and platform admins only there: a
-- second-tier admin inside it could otherwise manage the platform admins' keys. Anyone who is there
-- already in another role is disabled and their keys revoked.
UPDATE api_keys SET revoked_at = now()
WHERE revoked_at IS NULL AND user_id IN (
    SELECT u.id FROM users u JOIN organizations o ON o.id = u.organization_id
    WHERE o.is_platform AND u.role <> 'platform_admin');
UPDATE users SET disabled = true
WHERE role <> 'platform_admin' AND organization_id IN (SELECT id FROM organizations WHERE is_platform);
CREATE FUNCTION users_platform_roles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT is_platform FROM organizations WHERE id = NEW.organization_id) <> (NEW.role = 'platform_admin') THEN
        RAISE EXCEPTION 'platform admins belong to the platform organization, and nobody else does'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER users_platform_roles BEFORE INSERT OR UPDATE OF role, organization_id ON users
    FOR EACH ROW EXECUTE FUNCTION users_platform_roles();

-- Hold settings within the edge's bounds (the core used to take up to 100 tickets per visitor, the
-- edge 50): events stored above it are brought to it, so that their pushes are taken again.
UPDATE events SET hold_settings = jsonb_set(hold_settings, '{max_tickets_per_visitor}', '50')
WHERE (hold_settings->>'max_tickets_per_visitor')::int > 50;

-- No secret is kept in an idempotent answer: API keys stored before this change are removed.
UPDATE idempotency_keys SET body = (body - 'key') || '{"secret_withheld": "key"}'
WHERE body ? 'key';

-- When each version of a ticket began (a re-issue or a transfer makes a new one), so that an
-- offline scan of an earlier version made before the change still counts as the ticket's use.
CREATE TABLE ticket_versions (
    ticket_id   UUID NOT NULL REFERENCES tickets (id),
    version     INTEGER NOT NULL,
    valid_from  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (ticket_id, version)
);
-- Tickets already past version 1: their current version began at their last change at the latest.
INSERT INTO ticket_versions (ticket_id, version, valid_from)
SELECT id, version, updated_at FROM tickets WHERE version > 1;
CREATE FUNCTION ticket_versions_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version <> OLD.version THEN
        INSERT INTO ticket_versions (ticket_id, version) VALUES (NEW.id, NEW.version)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ticket_versions_record AFTER UPDATE OF version ON tickets
    FOR EACH ROW EXECUTE FUNCTION ticket_versions_record();

-- Failed promo code attempts per buyer and per hold, in fixed windows (a guessing bound).
CREATE TABLE promo_attempts (
    scope         TEXT PRIMARY KEY,
    window_start  TIMESTAMPTZ NOT NULL DEFAULT now(),
    failures      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX promo_attempts_window ON promo_attempts (window_start);

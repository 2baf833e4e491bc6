-- The audit log as organizers and operators read it (docs/audit.md): whose organization the change
-- belongs to, the caller's role and API key, and where the request came from. Append-only: rows are
-- never changed, and deleted only by the retention job, only when older than the cutoff it names.
ALTER TABLE audit_log
    ADD COLUMN organization_id UUID REFERENCES organizations (id),
    ADD COLUMN actor_role      TEXT,
    ADD COLUMN api_key_id      TEXT,
    ADD COLUMN ip              INET,
    ADD COLUMN user_agent      TEXT,
    ADD COLUMN request_id      TEXT;

-- Rows written before this change name their organization through their subject, and their
-- actor's role is the user's role now (the best that is known).
UPDATE audit_log a SET organization_id = e.organization_id
FROM events e WHERE a.subject = 'event:' || e.id::text;
UPDATE audit_log a SET organization_id = u.organization_id
FROM users u WHERE a.subject = 'user:' || u.id::text;
UPDATE audit_log a SET organization_id = k.organization_id
FROM api_keys k WHERE a.subject = 'api_key:' || k.id;
UPDATE audit_log a SET organization_id = o.id
FROM organizations o WHERE a.subject = 'organization:' || o.id::text;
UPDATE audit_log a SET actor_role = u.role
FROM users u WHERE a.actor = 'user:' || u.id::text;

-- An organization's log, page by page in (at, id) order; one actor's changes.
CREATE INDEX audit_log_org_at ON audit_log (organization_id, at, id);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_actor_at ON audit_log (actor, at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff TIMESTAMPTZ := NULLIF(current_setting('ticketing.audit_prune_before', true), '')::timestamptz;
BEGIN
    -- The retention job sets the cutoff for its own transaction (SET LOCAL): older rows may go.
    IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND OLD.at < cutoff THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only (%)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

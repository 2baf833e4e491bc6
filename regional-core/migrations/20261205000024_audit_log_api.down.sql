DROP TRIGGER audit_log_no_truncate ON audit_log;
DROP TRIGGER audit_log_append_only ON audit_log;
DROP FUNCTION audit_log_append_only();
DROP INDEX audit_log_actor_at;
DROP INDEX audit_log_at;
DROP INDEX audit_log_org_at;
ALTER TABLE audit_log
    DROP COLUMN request_id,
    DROP COLUMN user_agent,
    DROP COLUMN ip,
    DROP COLUMN api_key_id,
    DROP COLUMN actor_role,
    DROP COLUMN organization_id;

DROP TABLE promo_attempts;
DROP TRIGGER ticket_versions_record ON tickets;
DROP FUNCTION ticket_versions_record();
DROP TABLE ticket_versions;
DROP TRIGGER users_platform_roles ON users;
DROP FUNCTION users_platform_roles();

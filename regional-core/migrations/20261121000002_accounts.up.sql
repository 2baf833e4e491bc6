-- Accounts and access: organizations (tenants), their users with one role each, and API keys.
-- Every tenant-owned row names its organization; every query of the admin API filters on it.

CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        TEXT NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    time_zone   TEXT NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    -- The platform operator's own organization holds the platform admins.
    is_platform BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- At most one platform organization.
CREATE UNIQUE INDEX organizations_one_platform ON organizations (is_platform) WHERE is_platform;

CREATE TABLE users (
    id              UUID PRIMARY KEY,
    organization_id UUID NOT NULL REFERENCES organizations (id),
    email           TEXT NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    name            TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    role            TEXT NOT NULL CHECK (role IN
                        ('platform_admin', 'organizer_admin', 'organizer_staff', 'box_office', 'scanner')),
    disabled        BOOLEAN NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_org_created ON users (organization_id, created_at, id);

-- An API key is shown once as `tk_<id>_<secret>`; only the SHA-256 of the secret is kept (the
-- secret is 256 random bits, so a fast hash is enough: nothing to brute-force).
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY CHECK (id ~ '^[a-z0-9]{16}$'),
    user_id         UUID NOT NULL REFERENCES users (id),
    organization_id UUID NOT NULL REFERENCES organizations (id),
    name            TEXT NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    secret_sha256   BYTEA NOT NULL CHECK (length(secret_sha256) = 32),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at    TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ
);
CREATE INDEX api_keys_org_created ON api_keys (organization_id, created_at, id);

-- Idempotency of creating requests: the first answer to a key is stored and replayed.
CREATE TABLE idempotency_keys (
    organization_id UUID NOT NULL REFERENCES organizations (id),
    user_id         UUID NOT NULL REFERENCES users (id),
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    request_sha256  BYTEA NOT NULL,
    status          SMALLINT NOT NULL,
    body            JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

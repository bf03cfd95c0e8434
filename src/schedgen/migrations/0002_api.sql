-- Upload API state shared by all API replicas: API keys, idempotency keys and
-- rate-limit counters.

-- API keys are stored as the SHA-256 of the key (256-bit random keys: no need for a
-- slow hash); the key itself is shown once by `schedgen-api add-key`.
CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,                 -- hex sha256 of the whole key
    key_prefix  text NOT NULL,                    -- first characters, to recognise a key
    tenant      text NOT NULL CHECK (tenant ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(tenant) <= 63),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- `Idempotency-Key` of an upload -> the job it created. key_hash = sha256(tenant, key).
-- job_uid is set once the ParseJob exists: a replay then never creates a second one,
-- even after retention deleted the object.
CREATE TABLE idempotency_keys (
    tenant          text NOT NULL,
    key_hash        text NOT NULL,
    content_sha256  text NOT NULL,
    namespace       text NOT NULL,
    job_name        text NOT NULL,
    job_uid         uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key_hash)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Fixed one-minute windows per client and route class; one upsert per request.
-- UNLOGGED: counters need no crash safety, and the writes are on every request.
CREATE UNLOGGED TABLE rate_limit_windows (
    client_key    text NOT NULL,
    route_class   text NOT NULL,
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL,
    PRIMARY KEY (client_key, route_class, window_start)
);
CREATE INDEX rate_limit_windows_start ON rate_limit_windows (window_start);

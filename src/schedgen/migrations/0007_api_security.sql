-- API hardening (docs/api.md "Protection"): who may create keys, feeds that end with their
-- key, and row-level security on what the API reads per tenant.

-- schedgen_key_admin: the role that creates and revokes API keys (`schedgen-api add-key`,
-- `revoke-key`). NOLOGIN and cluster-wide like 0004's roles, created only when missing;
-- a key administrator logs in as a member:
--   CREATE USER schedgen_keys_login PASSWORD '...' IN ROLE schedgen_key_admin;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'schedgen_key_admin') THEN
        BEGIN
            CREATE ROLE schedgen_key_admin NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database's migration created it meanwhile
        END;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA public TO schedgen_key_admin;

-- 1. API keys: the API's role only reads them (it looks keys up; it never wrote one at run
-- time: `add-key`/`revoke-key` are the CLI's). A compromised API can no longer mint or
-- widen keys (INSERT an admin key, UPDATE admin/tenant/max_priority, un-revoke).
REVOKE INSERT, UPDATE, DELETE ON api_keys FROM schedgen_api;

-- A new key. Only schedgen_key_admin (and the owner) may call it; an admin key needs the
-- caller's login to be a member of schedgen_key_admin (or the owner) even if EXECUTE is
-- ever granted wider, e.g. for self-service keys.
CREATE FUNCTION schedgen_add_key(p_key_hash text, p_key_prefix text, p_tenant text, p_description text,
                                 p_admin boolean, p_max_priority text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF p_admin AND NOT (session_user = current_user
                        OR pg_has_role(session_user, 'schedgen_key_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'only members of schedgen_key_admin create admin keys'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO api_keys (key_hash, key_prefix, tenant, description, admin, max_priority)
    VALUES (p_key_hash, p_key_prefix, p_tenant, p_description, p_admin, p_max_priority);
END
$$;
REVOKE ALL ON FUNCTION schedgen_add_key(text, text, text, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_add_key(text, text, text, text, boolean, text) TO schedgen_key_admin;

-- Revocation is one way (revoked_at set once, never cleared): the number of keys revoked.
CREATE FUNCTION schedgen_revoke_key(p_key_hash text, p_key_prefix text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    UPDATE api_keys SET revoked_at = now()
     WHERE revoked_at IS NULL AND (key_hash = p_key_hash OR key_prefix = p_key_prefix);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION schedgen_revoke_key(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_revoke_key(text, text) TO schedgen_key_admin;

-- 2. Calendar feeds end with the key that made them and may expire. Rows made before this
-- migration have neither (NULL): they keep working until revoked or their job is erased.
ALTER TABLE calendar_feeds
    ADD COLUMN created_by_key text REFERENCES api_keys (key_hash) ON DELETE CASCADE,
    ADD COLUMN expires_at timestamptz;
CREATE INDEX calendar_feeds_created_by_key ON calendar_feeds (created_by_key);

-- The feed a token opens, if it still serves: not revoked, not expired, its key not
-- revoked. Feeds are fetched without an API key, so the tenant is not known before this
-- lookup: the function sees every tenant's feeds, the API's role sees only this one row.
CREATE FUNCTION schedgen_find_feed(p_token_hash text)
RETURNS TABLE (tenant text, namespace text, job_name text, job_uid uuid, params jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT f.tenant, f.namespace, f.job_name, f.job_uid, f.params
      FROM calendar_feeds f
     WHERE f.token_hash = p_token_hash AND f.revoked_at IS NULL
       AND (f.expires_at IS NULL OR f.expires_at > now())
       AND (f.created_by_key IS NULL OR EXISTS (
                SELECT 1 FROM api_keys k WHERE k.key_hash = f.created_by_key AND k.revoked_at IS NULL))
$$;
REVOKE ALL ON FUNCTION schedgen_find_feed(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_find_feed(text) TO schedgen_api;

-- 3. Row-level security for the API's role. Each API transaction sets its tenant first:
--   SELECT set_config('schedgen.tenant', '<tenant>', true)   -- SET LOCAL: ends with the transaction
-- and sees that tenant's rows only, whatever its WHERE clause says. '*' (never a tenant:
-- tenants are DNS labels) is the explicit "every tenant" of admin keys' queue views; it
-- reads, it never writes. Unset (a connection outside such a transaction): nothing.
-- The operator's role gets policies that allow everything (it records every tenant's
-- jobs); the table owner (migrations, SECURITY DEFINER functions) is not subject to RLS.
CREATE FUNCTION schedgen_tenant_visible(p_tenant text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_tenant = current_setting('schedgen.tenant', true) OR current_setting('schedgen.tenant', true) = '*'
$$;
CREATE FUNCTION schedgen_tenant_is(p_tenant text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p_tenant = current_setting('schedgen.tenant', true) AND p_tenant <> '*'
$$;

ALTER TABLE parse_jobs ENABLE ROW LEVEL SECURITY;
CREATE POLICY parse_jobs_operator ON parse_jobs TO schedgen_operator USING (true) WITH CHECK (true);
CREATE POLICY parse_jobs_api ON parse_jobs FOR SELECT TO schedgen_api USING (schedgen_tenant_visible(tenant));

ALTER TABLE parse_job_transitions ENABLE ROW LEVEL SECURITY;
CREATE POLICY parse_job_transitions_operator ON parse_job_transitions TO schedgen_operator
    USING (true) WITH CHECK (true);
CREATE POLICY parse_job_transitions_api ON parse_job_transitions FOR SELECT TO schedgen_api USING (EXISTS (
    SELECT 1 FROM parse_jobs j WHERE j.uid = parse_job_transitions.job_uid AND schedgen_tenant_visible(j.tenant)));

-- events: the operator writes them with COPY, which Postgres refuses on a table with row-
-- level security for the writing role (even under an allow-all policy). So the table keeps
-- no RLS and the API's role loses direct access to it: it reads `api_events`, a
-- security_barrier view with the same rule (the rows of jobs of the transaction's tenant).
-- The view runs with its owner's rights on `events` and `parse_jobs`; its WHERE clause is
-- the policy, evaluated before any condition of the query that reads it.
REVOKE SELECT ON events FROM schedgen_api;
CREATE VIEW api_events WITH (security_barrier) AS
    SELECT e.* FROM events e
     WHERE EXISTS (SELECT 1 FROM parse_jobs j WHERE j.uid = e.job_uid AND schedgen_tenant_visible(j.tenant));
GRANT SELECT ON api_events TO schedgen_api;

ALTER TABLE calendar_feeds ENABLE ROW LEVEL SECURITY;
CREATE POLICY calendar_feeds_api_read ON calendar_feeds FOR SELECT TO schedgen_api
    USING (schedgen_tenant_visible(tenant));
CREATE POLICY calendar_feeds_api_insert ON calendar_feeds FOR INSERT TO schedgen_api
    WITH CHECK (schedgen_tenant_is(tenant));
CREATE POLICY calendar_feeds_api_update ON calendar_feeds FOR UPDATE TO schedgen_api
    USING (schedgen_tenant_is(tenant)) WITH CHECK (schedgen_tenant_is(tenant));

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_api ON idempotency_keys TO schedgen_api
    USING (schedgen_tenant_is(tenant)) WITH CHECK (schedgen_tenant_is(tenant));

-- What the API does across tenants, each narrowed to one answer: expired idempotency keys
-- purged (no tenant is set for maintenance), and whether any other job still uses an
-- uploaded PDF (erasure keeps it then; a yes or no, no rows).
CREATE FUNCTION schedgen_purge_idempotency(p_ttl_seconds integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => greatest(p_ttl_seconds, 60));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION schedgen_purge_idempotency(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_purge_idempotency(integer) TO schedgen_api;

CREATE FUNCTION schedgen_source_key_in_use(p_key text, p_except uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM parse_jobs WHERE source_key = p_key AND uid <> p_except)
$$;
REVOKE ALL ON FUNCTION schedgen_source_key_in_use(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_source_key_in_use(text, uuid) TO schedgen_api;

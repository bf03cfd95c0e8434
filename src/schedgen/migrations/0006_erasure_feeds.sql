-- Right to erasure (DELETE /api/v1/jobs/{id}) and calendar feeds (docs/api.md).
--
-- The API's role still cannot write records or events: it erases one job through
-- schedgen_erase_job, a SECURITY DEFINER function owned by the migrating user, which
-- deletes that job's rows (parse_jobs; events and transitions cascade; idempotency keys;
-- calendar feeds) and leaves a tombstone. The tombstone (the job's random uid, nothing
-- else) makes a late write of the operator for that uid a no-op (BEFORE INSERT triggers),
-- so an erased job cannot come back.

CREATE TABLE erased_jobs (
    uid        uuid PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

-- Calendar feeds: a secret URL per job, stored as the SHA-256 of its token (>= 128 bits).
CREATE TABLE calendar_feeds (
    token_hash  text PRIMARY KEY,
    tenant      text NOT NULL,
    namespace   text NOT NULL,
    job_name    text NOT NULL,
    job_uid     uuid NOT NULL,
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,   -- from/until/examHours/exclude stored with it
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX calendar_feeds_current ON calendar_feeds (job_uid) WHERE revoked_at IS NULL;

-- Writes of an erased uid are dropped (not failed: the operator must not retry forever).
CREATE FUNCTION schedgen_skip_erased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM erased_jobs WHERE uid = (to_jsonb(NEW) ->> TG_ARGV[0])::uuid) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION schedgen_skip_erased() FROM PUBLIC;

CREATE TRIGGER parse_jobs_skip_erased BEFORE INSERT ON parse_jobs
    FOR EACH ROW EXECUTE FUNCTION schedgen_skip_erased('uid');
CREATE TRIGGER events_skip_erased BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION schedgen_skip_erased('job_uid');
CREATE TRIGGER parse_job_transitions_skip_erased BEFORE INSERT ON parse_job_transitions
    FOR EACH ROW EXECUTE FUNCTION schedgen_skip_erased('job_uid');

-- Erase one job of one tenant: its rows go, its uid is tombstoned. Refuses another
-- tenant's job (the API checked already; this is the database's own guard). Returns the
-- number of parse_jobs rows deleted (0: not recorded yet, the tombstone still holds).
CREATE FUNCTION schedgen_erase_job(p_uid uuid, p_namespace text, p_name text, p_tenant text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    IF EXISTS (SELECT 1 FROM parse_jobs WHERE uid = p_uid AND tenant <> p_tenant) THEN
        RAISE EXCEPTION 'job % is not tenant %''s', p_uid, p_tenant USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO erased_jobs (uid) VALUES (p_uid) ON CONFLICT DO NOTHING;
    DELETE FROM parse_jobs WHERE uid = p_uid;  -- events and transitions cascade
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM idempotency_keys
     WHERE tenant = p_tenant AND (job_uid = p_uid OR (namespace = p_namespace AND job_name = p_name));
    DELETE FROM calendar_feeds WHERE job_uid = p_uid;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION schedgen_erase_job(uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_erase_job(uuid, text, text, text) TO schedgen_api;

GRANT SELECT, INSERT, UPDATE ON calendar_feeds TO schedgen_api;

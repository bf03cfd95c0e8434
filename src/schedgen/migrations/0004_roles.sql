-- Least-privilege group roles. The migrating user owns every table; deployments log in
-- as users that are members of one of these roles and hold nothing else:
--
--   CREATE USER schedgen_operator_login PASSWORD '...' IN ROLE schedgen_operator;
--   CREATE USER schedgen_api_login      PASSWORD '...' IN ROLE schedgen_api;
--
-- The roles are NOLOGIN and cluster-wide (shared by every database of the server), so
-- they are created only when missing; the grants are per database and idempotent.
-- A later migration that adds a table grants on it here-alike (no default privileges:
-- every grant is visible in the migration that creates the table).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['schedgen_operator', 'schedgen_api'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it meanwhile
            END;
        END IF;
    END LOOP;
END
$$;

-- Nobody but the owner creates objects in the schema (PUBLIC had CREATE before PG 15).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO schedgen_operator, schedgen_api;

-- The operator: the ParseJob rows, their transitions, and the events (it becomes their
-- writer; until then a runner that still writes events logs in as an operator member).
-- No DELETE on parse_jobs: rows outlive the objects. Nothing of the API's tables.
GRANT SELECT, INSERT, UPDATE ON parse_jobs TO schedgen_operator;
GRANT SELECT, INSERT ON parse_job_transitions TO schedgen_operator;
GRANT SELECT, INSERT, UPDATE, DELETE ON events TO schedgen_operator;

-- The API: reads records and events, never writes them; its own state read/write.
GRANT SELECT ON parse_jobs, parse_job_transitions, events TO schedgen_api;
GRANT SELECT, INSERT, UPDATE ON api_keys TO schedgen_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, rate_limit_windows TO schedgen_api;

-- Calendar feeds that follow the timetable (docs/api.md "Calendar feeds").
--
-- Additive only, so the previous release still runs against this schema (no rename, no
-- drop, no new NOT NULL on existing columns; its statements and schedgen_find_feed keep
-- working unchanged):
--   * `id`: a feed's public handle for `PUT/DELETE /api/v1/feeds/{id}` (the token is the
--     secret and is stored only as its hash). Filled for old rows and for rows the previous
--     release inserts (the default).
--   * `follow_schedule_type`: NULL for a feed pinned to one job (job_name, job_uid); a
--     schedule kind for a feed that serves the tenant's newest Succeeded job of that kind.
--     A following feed's job_uid is a random uuid of no job (so it never takes the one
--     current feed per job of calendar_feeds_current, and the previous release answers
--     such a feed 404 instead of serving some job).
-- Pinned feeds are re-pointed (PUT) by updating job_name and job_uid: the token stays.

ALTER TABLE calendar_feeds
    ADD COLUMN id uuid DEFAULT gen_random_uuid(),
    ADD COLUMN follow_schedule_type text CHECK (follow_schedule_type IN ('lecture', 'test', 'exam'));
CREATE UNIQUE INDEX calendar_feeds_id ON calendar_feeds (id);

-- The newest Succeeded job of a kind, per tenant: what a following feed serves.
CREATE INDEX parse_jobs_succeeded_kind ON parse_jobs (tenant, namespace, kind, created_at DESC)
    WHERE phase = 'Succeeded';

-- schedgen_find_feed with the feed's id and what it follows (the previous release keeps
-- calling schedgen_find_feed, whose result type cannot change without a drop).
CREATE FUNCTION schedgen_open_feed(p_token_hash text)
RETURNS TABLE (tenant text, namespace text, job_name text, job_uid uuid, params jsonb, id uuid,
               follow_schedule_type text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT f.tenant, f.namespace, f.job_name, f.job_uid, f.params, f.id, f.follow_schedule_type
      FROM calendar_feeds f
     WHERE f.token_hash = p_token_hash AND f.revoked_at IS NULL
       AND (f.expires_at IS NULL OR f.expires_at > now())
       AND (f.created_by_key IS NULL OR EXISTS (
                SELECT 1 FROM api_keys k WHERE k.key_hash = f.created_by_key AND k.revoked_at IS NULL))
$$;
REVOKE ALL ON FUNCTION schedgen_open_feed(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION schedgen_open_feed(text) TO schedgen_api;

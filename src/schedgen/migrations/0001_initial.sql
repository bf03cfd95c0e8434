-- ParseJob records (written by the operator) and their events (written by the runner).
-- Records outlive the ParseJob objects: retention deletes objects, never rows.

CREATE TABLE parse_jobs (
    uid            uuid PRIMARY KEY,          -- the ParseJob's metadata.uid
    namespace      text NOT NULL,
    name           text NOT NULL,
    tenant         text NOT NULL,
    priority       text NOT NULL DEFAULT 'normal',
    schedule_type  text NOT NULL DEFAULT 'auto',
    source_bucket  text,
    source_key     text NOT NULL,
    phase          text NOT NULL DEFAULT 'Queued'
                   CHECK (phase IN ('Queued', 'Running', 'Succeeded', 'Failed', 'Cancelled')),
    -- Ordinal of the last transition recorded: a transition is applied only when its
    -- ordinal is higher, so replays after an outage never go backwards or double count.
    transition_seq integer NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 0,
    job_name       text,
    kind           text CHECK (kind IN ('lecture', 'test', 'exam')),
    event_count    integer,
    pages          integer,
    parse_seconds  double precision,
    error_reason   text,
    error_message  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    enqueued_at    timestamptz,
    started_at     timestamptz,
    completed_at   timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (namespace, name, uid)
);

CREATE INDEX parse_jobs_phase_tenant ON parse_jobs (phase, tenant);
CREATE INDEX parse_jobs_tenant_created ON parse_jobs (tenant, created_at DESC);
CREATE INDEX parse_jobs_namespace_name ON parse_jobs (namespace, name);

-- Every recorded phase change, for audit and for "no transition lost or recorded twice".
CREATE TABLE parse_job_transitions (
    job_uid   uuid NOT NULL REFERENCES parse_jobs (uid) ON DELETE CASCADE,
    seq       integer NOT NULL,
    phase     text NOT NULL,
    reason    text,
    message   text,
    at        timestamptz NOT NULL,
    PRIMARY KEY (job_uid, seq)
);

CREATE TABLE events (
    job_uid          uuid NOT NULL REFERENCES parse_jobs (uid) ON DELETE CASCADE,
    ordinal          integer NOT NULL,
    module           text NOT NULL,
    activity         text NOT NULL,
    group_name       text,
    day              text,
    date             date,
    start_time       time,
    end_time         time,
    venues           text[] NOT NULL DEFAULT '{}',
    campus           text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the remaining source columns
    PRIMARY KEY (job_uid, ordinal)
);

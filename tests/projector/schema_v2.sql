-- The read model as of schema version 2 (before it was versioned): runs keyed by id alone,
-- the reliability columns added with ALTER. Kept to test upgrading such a database.

-- natchet read model. Every value comes from the log (no serial ids, no now() defaults), so
-- a projection rebuilt from the same messages is identical. ``last_seq`` is the stream
-- sequence of the message that last changed a row; an update applies only to older rows.
-- Unqualified names: migrate() runs this with search_path set to the target schema.

CREATE TABLE IF NOT EXISTS projector_checkpoints (
    stream   text PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS workflows (
    tenant        text NOT NULL,
    namespace     text NOT NULL,
    name          text NOT NULL,
    version       text NOT NULL,
    definition    jsonb NOT NULL,
    on_events     text[] NOT NULL,
    registered_at timestamptz NOT NULL,
    last_seq      bigint NOT NULL,
    PRIMARY KEY (tenant, namespace, name, version)
);

CREATE TABLE IF NOT EXISTS events (
    tenant      text NOT NULL,
    namespace   text NOT NULL,
    seq         bigint NOT NULL,
    key         text NOT NULL,
    payload     jsonb,           -- NULL when the body is not valid JSON
    raw         text,            -- the body as text, kept when it is not valid JSON
    valid       boolean NOT NULL,
    received_at timestamptz,     -- the stream timestamp, when the record carries it
    PRIMARY KEY (tenant, seq)
);

CREATE TABLE IF NOT EXISTS runs (
    id                    text PRIMARY KEY,
    tenant                text NOT NULL,
    namespace             text NOT NULL,
    workflow              text NOT NULL,
    workflow_version      text,
    status                text NOT NULL,
    input                 jsonb,
    triggered_by_key      text,
    triggered_by_event_id text,
    error                 text,
    created_at            timestamptz NOT NULL,
    started_at            timestamptz,
    finished_at           timestamptz,
    last_seq              bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_tenant_namespace_status ON runs (tenant, namespace, status);
CREATE INDEX IF NOT EXISTS runs_created_at ON runs (created_at DESC);

-- status: PENDING (in the DAG, not yet queued), then QUEUED, RUNNING, and a terminal one.
CREATE TABLE IF NOT EXISTS steps (
    run_id      text NOT NULL,
    name        text NOT NULL,
    parents     text[] NOT NULL,
    status      text NOT NULL,
    output      jsonb,
    error       text,
    queued_at   timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    attempt     integer,
    last_seq    bigint NOT NULL,
    PRIMARY KEY (run_id, name)
);

CREATE TABLE IF NOT EXISTS attempts (
    run_id      text NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    delivery    integer NOT NULL,
    worker_id   text,
    worker_name text,
    status      text NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz,
    error       text,
    output      jsonb,
    last_seq    bigint NOT NULL,
    PRIMARY KEY (run_id, step, attempt, delivery)
);

CREATE TABLE IF NOT EXISTS step_logs (
    tenant   text NOT NULL,
    seq      bigint NOT NULL,
    run_id   text NOT NULL,
    step     text NOT NULL,
    attempt  integer NOT NULL,
    delivery integer NOT NULL,
    line     text NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (tenant, seq)
);
CREATE INDEX IF NOT EXISTS step_logs_run_step ON step_logs (run_id, step);

-- Messages the projector could not decode or store: recorded, then skipped.
CREATE TABLE IF NOT EXISTS rejections (
    tenant  text NOT NULL,
    seq     bigint NOT NULL,
    subject text NOT NULL,
    reason  text NOT NULL,
    at      timestamptz,         -- the stream timestamp, when the record carries it
    PRIMARY KEY (tenant, seq)
);

-- Reliability (retries with backoff, cancellation, on-failure steps). Added with ALTER so that
-- an existing database upgrades in place, and so that a fresh schema and an upgraded one have
-- their columns in the same order (``natchet replay`` compares them row by row).
-- Attempt statuses gain LOST (a later delivery of the same attempt was assigned: the worker
-- holding this one is presumed dead) and CANCELLED (handed back, or the run ended first).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS cancel_reason text;
-- When the step's next attempt is due (a retry with backoff); NULL once it is queued.
ALTER TABLE steps ADD COLUMN IF NOT EXISTS retry_due_at timestamptz;
-- The run's on-failure step: not part of the DAG, runs only when the run fails.
ALTER TABLE steps ADD COLUMN IF NOT EXISTS on_failure boolean NOT NULL DEFAULT false;

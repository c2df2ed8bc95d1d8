-- natchet read model. Every value comes from the log (no serial ids, no now() defaults), so
-- a projection rebuilt from the same messages is identical. ``last_seq`` is the stream
-- sequence of the message that last changed a row; an update applies only to older rows.
-- Unqualified names: migrate() runs this with search_path set to the target schema.
--
-- Run ids are not unique across tenants (clients choose them, the dispatcher derives them
-- predictably), so a run is keyed by (tenant, id) and every row under it by its tenant too.
--
-- The layout has a version (migrations.SCHEMA_VERSION, recorded in projector_schema_version).
-- A database of an older version is not altered in place: migrate() drops the projection
-- tables and recreates them, and the projector rebuilds them from the log. So a change to
-- this file that CREATE TABLE IF NOT EXISTS does not apply must raise SCHEMA_VERSION.

-- One row: the layout version the tables of this schema were created with.
CREATE TABLE IF NOT EXISTS projector_schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   integer NOT NULL
);

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
    replay_of   bigint,          -- published again (natchet events replay): the seq it repeats
    additional_metadata jsonb,   -- its Natchet-Meta-<key> headers, as an object (NULL: none)
    PRIMARY KEY (tenant, seq)
);

CREATE TABLE IF NOT EXISTS runs (
    id                    text NOT NULL,
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
    last_seq              bigint NOT NULL,
    cancel_requested_at   timestamptz,
    cancel_reason         text,
    replay_of             text,    -- a replay (natchet runs replay): the run it re-runs
    replay_from_step      text,    -- ... from this step (NULL: all of it)
    parent_run_id         text,    -- a child run (spawned by a step): its parent run,
    parent_step           text,    -- ... the parent's step that spawned it,
    child_key             text,    -- ... and the spawn's key (its id derives from the three)
    additional_metadata   jsonb,   -- the request's or the event's metadata (NULL: none)
    triggered_by_cron     text,    -- a cron's tick (layout 6): the cron's name
    triggered_by_schedule text,    -- a scheduled run (layout 6): the schedule's id
    trigger_fire_at       timestamptz,  -- ... the tick, or when the schedule was due
    concurrency_key       text,    -- its concurrency key (layout 8; NULL: the workflow has none)
    concurrency           jsonb,   -- ... the workflow's {expression, max_runs, limit_strategy}
    priority              smallint, -- its priority 1..3 (layout 9; NULL: none, not windowed)
    PRIMARY KEY (tenant, id)
);
-- The run list (projector.queries.list_runs) is newest first, (created_at DESC, id, tenant),
-- paged by keyset. Each runs_list_* index holds the equality filter it serves, then
-- created_at: a page under any filter is a range scan in list order (runs of one instant
-- put in id order as they come, an incremental sort) that stops once the page is full,
-- however many runs there are: on the filter's own index when it is selective, else on
-- runs_list, newest first, the filters checked on the rows met; counts scan these indexes
-- alone.
-- They end at created_at, without id: an index holding (tenant, ..., id) would tie with
-- the primary key for the projector's loads by (tenant, id) on fresh tables, and a plan
-- kept from then would scan a tenant's runs for each load (test_projector_store).
-- (Layout 5; they replace (tenant, namespace, status) and (created_at DESC).)
CREATE INDEX IF NOT EXISTS runs_list ON runs (created_at DESC);
CREATE INDEX IF NOT EXISTS runs_list_tenant ON runs (tenant, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_list_namespace ON runs (tenant, namespace, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_list_status ON runs (tenant, status, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_list_workflow ON runs (tenant, workflow, created_at DESC);
CREATE INDEX IF NOT EXISTS runs_list_event_key ON runs (tenant, triggered_by_key, created_at DESC)
    WHERE triggered_by_key IS NOT NULL;
-- A run id prefix (the dashboard's free-text search): code point order ("C"), whatever the
-- database's collation; an id compared in the database's own collation (the loads) cannot
-- use it.
CREATE INDEX IF NOT EXISTS runs_id_prefix ON runs (tenant, id COLLATE "C");
-- A parent's children (projector.queries.get_run).
CREATE INDEX IF NOT EXISTS runs_parent ON runs (tenant, parent_run_id)
    WHERE parent_run_id IS NOT NULL;
-- Runs by additional metadata (`natchet runs list --metadata k=v`: additional_metadata @>
-- '{"k": "v"}'); the tenant and the list order are checked on the rows it finds. (Layout 6.)
CREATE INDEX IF NOT EXISTS runs_metadata ON runs USING gin (additional_metadata jsonb_path_ops);
-- The runs of a concurrency key (`natchet runs list --concurrency-key K`), in list order
-- like the runs_list_* indexes; a workflow filter too is checked on the rows. (Layout 8.)
CREATE INDEX IF NOT EXISTS runs_list_concurrency_key ON runs (tenant, concurrency_key, created_at DESC)
    WHERE concurrency_key IS NOT NULL;
-- The runs an event started (projector.queries.events_page).
CREATE INDEX IF NOT EXISTS runs_event ON runs (tenant, triggered_by_event_id)
    WHERE triggered_by_event_id IS NOT NULL;

-- status: PENDING (in the DAG, not yet queued), then QUEUED, RUNNING, and a terminal one;
-- a durable step between RUNNING and QUEUED again: WAITING (layout 7), its waiting_for
-- saying what ends the wait ("sleep until <time>, or event <key> where <expression>"),
-- NULL whenever the step is not WAITING.
-- retry_due_at: when the step's next attempt is due (a retry with backoff); NULL once queued.
-- on_failure: the run's on-failure step, not part of the DAG, runs only when the run fails.
CREATE TABLE IF NOT EXISTS steps (
    tenant       text NOT NULL,
    run_id       text NOT NULL,
    name         text NOT NULL,
    parents      text[] NOT NULL,
    status       text NOT NULL,
    output       jsonb,
    error        text,
    queued_at    timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    attempt      integer,
    last_seq     bigint NOT NULL,
    retry_due_at timestamptz,
    on_failure   boolean NOT NULL DEFAULT false,
    on_success   boolean NOT NULL DEFAULT false,  -- the on-success step, after the DAG
    waiting_for  text,        -- a WAITING step: what it waits for (layout 7)
    PRIMARY KEY (tenant, run_id, name)
);

-- status: RUNNING, then SUCCEEDED or FAILED; LOST (a later delivery of the same attempt was
-- assigned: the worker holding this one is presumed dead) or CANCELLED (handed back, or the
-- run ended first); SUSPENDED (layout 7): the delivery's durable step waited and gave its
-- slot back, finished_at the wait's time (the attempt goes on in a later delivery, once
-- woken; started_at is NULL when no assigned came before the wait).
CREATE TABLE IF NOT EXISTS attempts (
    tenant      text NOT NULL,
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
    PRIMARY KEY (tenant, run_id, step, attempt, delivery)
);

-- A durable step's waits (layout 7): wait wait_index (from 0) of the step's attempt, as its
-- ``waiting`` said (the delivery that waited, its conditions, any one of which ends it, and
-- the same as a sentence; the worker; waited_at), then as its ``woken`` said, once: woken_at,
-- which condition (its index in conditions), its kind (sleep or event) and, for an event,
-- its key, id (stream sequence) and payload. NULL woken_at: still waiting.
CREATE TABLE IF NOT EXISTS step_waits (
    tenant      text NOT NULL,
    run_id      text NOT NULL,
    step        text NOT NULL,
    attempt     integer NOT NULL,
    wait_index  integer NOT NULL,
    delivery    integer NOT NULL,
    conditions  jsonb NOT NULL,
    waiting_for text NOT NULL,
    worker_id   text NOT NULL,
    worker_name text NOT NULL,
    waited_at   timestamptz NOT NULL,
    woken_at    timestamptz,
    condition   integer,
    kind        text,
    event_key   text,
    event_id    text,
    payload     jsonb,
    last_seq    bigint NOT NULL,
    PRIMARY KEY (tenant, run_id, step, attempt, wait_index)
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
CREATE INDEX IF NOT EXISTS step_logs_tenant_run_step ON step_logs (tenant, run_id, step);

-- Messages the projector could not decode or store: recorded, then skipped.
CREATE TABLE IF NOT EXISTS rejections (
    tenant  text NOT NULL,
    seq     bigint NOT NULL,
    subject text NOT NULL,
    reason  text NOT NULL,
    at      timestamptz,         -- the stream timestamp, when the record carries it
    PRIMARY KEY (tenant, seq)
);


-- Crons (issue 14; layout 6): one row per name, as its records leave it. status: ACTIVE,
-- DELETED or REJECTED (reason); next_fire_at: the tick its timer is armed for.
CREATE TABLE IF NOT EXISTS crons (
    tenant       text NOT NULL,
    namespace    text NOT NULL,
    name         text NOT NULL,
    cron_id      text NOT NULL,
    workflow     text NOT NULL,
    expression   text NOT NULL,
    timezone     text,
    input        jsonb,
    status       text NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL,
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    last_run_id  text,
    deleted_at   timestamptz,
    last_seq     bigint NOT NULL,
    PRIMARY KEY (tenant, namespace, name)
);

-- Scheduled runs (issue 14; layout 6). status: PENDING, FIRED (run_id), DELETED or
-- REJECTED (reason).
CREATE TABLE IF NOT EXISTS schedules (
    tenant     text NOT NULL,
    namespace  text NOT NULL,
    id         text NOT NULL,
    workflow   text NOT NULL,
    trigger_at timestamptz,
    input      jsonb,
    status     text NOT NULL,
    reason     text,
    run_id     text,
    created_at timestamptz NOT NULL,
    fired_at   timestamptz,
    deleted_at timestamptz,
    last_seq   bigint NOT NULL,
    PRIMARY KEY (tenant, namespace, id)
);

-- offload's queue on PostgreSQL, schema version 1.
-- Columns mirror the SQLite schema (queue/schema.py) so both backends build the same Task
-- records; JSON values are stored as text for the same reason. Times are UTC milliseconds.

CREATE TABLE tasks (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT COLLATE "C" NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    state             TEXT NOT NULL,
    command           TEXT,
    spec              TEXT,
    cwd               TEXT NOT NULL,
    workspace         TEXT NOT NULL,
    timeout_seconds   DOUBLE PRECISION,
    priority          INTEGER NOT NULL,
    grp               TEXT,
    env               TEXT,
    name              TEXT,
    labels            TEXT,
    output_path       TEXT,
    context_files     TEXT,
    model             TEXT,
    large_context     BOOLEAN NOT NULL DEFAULT false,
    max_turns         INTEGER,
    parent_id         TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    attempt           INTEGER NOT NULL DEFAULT 1,
    exit_code         INTEGER,
    signal            INTEGER,
    error             TEXT,
    pid               INTEGER,
    pgid              INTEGER,
    proc_start        DOUBLE PRECISION,
    cgroup            TEXT,
    supervisor_id     TEXT,
    log_path          TEXT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT false,
    progress          DOUBLE PRECISION,
    progress_message  TEXT,
    tokens_in         BIGINT,
    tokens_out        BIGINT,
    tokens_cached     BIGINT,
    cost_usd          DOUBLE PRECISION,
    model_used        TEXT,
    files_written     TEXT,
    result            TEXT,
    policy            TEXT,  -- the submitter's TaskPolicy (JSON)
    environ           TEXT,  -- the submitter's scrubbed environment (JSON)
    containment       TEXT,  -- what the supervisor ran it under
    run_on            TEXT   -- host labels the executing member must have (JSON list)
);
-- The claim walks pending tasks in (priority, seq) order: a partial index keeps that walk
-- as cheap with 100,000 finished rows as with none.
CREATE INDEX tasks_claim ON tasks (priority, seq) WHERE state = 'pending';
CREATE INDEX tasks_state_seq ON tasks (state, seq);
CREATE INDEX tasks_group ON tasks (grp, state) WHERE grp IS NOT NULL;
CREATE INDEX tasks_group_pending ON tasks (grp, priority, seq) WHERE state = 'pending';
CREATE INDEX tasks_supervisor ON tasks (supervisor_id) WHERE state = 'running';
CREATE INDEX tasks_workspace ON tasks (workspace, seq);
CREATE INDEX tasks_finished ON tasks (finished_at);
CREATE INDEX tasks_parent ON tasks (parent_id);

CREATE TABLE deps (
    task_id     TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX deps_reverse ON deps (depends_on, task_id);

-- One row per group name ever submitted. A claimer holds the row lock of every group it
-- may claim from while it counts that group's running tasks, so two hosts never both see
-- the last free slot.
CREATE TABLE groups (
    grp  TEXT PRIMARY KEY
);

-- Writers insert their events last, under a transaction advisory lock held until commit,
-- so events become visible in seq order and a reader's cursor never skips one.
CREATE TABLE events (
    seq      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id  TEXT,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX events_task ON events (task_id, seq);

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Supervisors of every host, each with a lease it renews.
CREATE TABLE members (
    id                TEXT PRIMARY KEY,
    host              TEXT NOT NULL,
    pid               INTEGER NOT NULL,
    labels            TEXT NOT NULL,
    capacity          INTEGER NOT NULL,
    registered_at     BIGINT NOT NULL,
    renewed_at        BIGINT NOT NULL,
    lease_expires_at  BIGINT NOT NULL,
    lost_at           BIGINT
);
CREATE INDEX members_lease ON members (lease_expires_at) WHERE lost_at IS NULL;

-- Task output shipped by the executing host, so any host can read it.
CREATE TABLE output_chunks (
    task_id  TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    "offset" BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (task_id, "offset")
);

"""SQLite schema of the queue and its migrations.

`MIGRATIONS[i]` brings a database from version i to i + 1; the version lives in
`PRAGMA user_version`. Add a migration, never edit a shipped one.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_V1 = """
CREATE TABLE tasks (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    type              TEXT NOT NULL,
    state             TEXT NOT NULL,
    command           TEXT,
    spec              TEXT,
    cwd               TEXT NOT NULL,
    workspace         TEXT NOT NULL,
    timeout_seconds   REAL,
    priority          INTEGER NOT NULL,
    grp               TEXT,
    env               TEXT,
    name              TEXT,
    labels            TEXT,
    output_path       TEXT,
    context_files     TEXT,
    model             TEXT,
    large_context     INTEGER NOT NULL DEFAULT 0,
    max_turns         INTEGER,
    parent_id         TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    attempt           INTEGER NOT NULL DEFAULT 1,
    exit_code         INTEGER,
    signal            INTEGER,
    error             TEXT,
    pid               INTEGER,
    pgid              INTEGER,
    proc_start        REAL,
    cgroup            TEXT,
    supervisor_id     TEXT,
    log_path          TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    progress          REAL,
    progress_message  TEXT,
    tokens_in         INTEGER,
    tokens_out        INTEGER,
    cost_usd          REAL,
    model_used        TEXT,
    files_written     TEXT,
    result            TEXT
);
CREATE INDEX tasks_claim ON tasks (state, priority, seq);
CREATE INDEX tasks_state_seq ON tasks (state, seq);
CREATE INDEX tasks_group ON tasks (grp, state);
CREATE INDEX tasks_workspace ON tasks (workspace, seq);
CREATE INDEX tasks_finished ON tasks (finished_at);
CREATE INDEX tasks_parent ON tasks (parent_id);

CREATE TABLE deps (
    task_id     TEXT NOT NULL,
    depends_on  TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX deps_reverse ON deps (depends_on, task_id);

CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX events_task ON events (task_id, seq);

CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
"""

_V2 = """
ALTER TABLE tasks ADD COLUMN tokens_cached INTEGER
"""

# Policies and environments travel with the task; the supervisor records the containment
# it ran under; `run_on` lists the host labels a task needs.
_V3 = """
ALTER TABLE tasks ADD COLUMN policy TEXT;
ALTER TABLE tasks ADD COLUMN environ TEXT;
ALTER TABLE tasks ADD COLUMN containment TEXT;
ALTER TABLE tasks ADD COLUMN run_on TEXT
"""

# Every index on a column a task's life changes costs each change a page of the write-ahead
# log: these three hold only the rows they serve (the pending, the grouped, the finished),
# so a claim or a finish of an ungrouped task writes three pages fewer than before.
_V4 = """
DROP INDEX IF EXISTS tasks_claim;
CREATE INDEX tasks_claim ON tasks (state, priority, seq) WHERE state = 'pending';
DROP INDEX IF EXISTS tasks_group;
CREATE INDEX tasks_group ON tasks (grp, state) WHERE grp IS NOT NULL;
DROP INDEX IF EXISTS tasks_finished;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)

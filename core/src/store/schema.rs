//! The schema of both backends in one place: each one's version and
//! migrations, with the SQL they share written once (the macros below).
//! `core/tests/storage.rs` checks that a fresh database of each backend has
//! the same tables, columns and indexes.

/// The SQLite schema version this build writes; newer databases are refused.
pub const SQLITE_SCHEMA_VERSION: i64 = 12;

/// The indexes of schema 4 (SQLite) and 2 (PostgreSQL): queues, due
/// endpoints and unique keys per site. The old per-endpoint ones go first.
macro_rules! site_indexes {
    () => {
        r#"
CREATE INDEX endpoints_due ON endpoints(site, next_due) WHERE next_due IS NOT NULL;
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks(site, endpoint, priority DESC, due_at, id) WHERE state = 'queued';
DROP INDEX tasks_next_due;
CREATE INDEX tasks_next_due ON tasks(site, endpoint, due_at) WHERE state = 'queued';
DROP INDEX tasks_unique;
CREATE UNIQUE INDEX tasks_unique ON tasks(site, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
"#
    };
}

/// Schema 5 (SQLite) and 3 (PostgreSQL), in SQL both accept: recurring
/// schedules, whose occurrences are tasks naming their schedule and time.
/// The database keeps one pending (queued, never started) occurrence per
/// schedule and never two tasks for one occurrence.
macro_rules! schedule_schema {
    () => {
        r#"
ALTER TABLE tasks ADD COLUMN schedule TEXT;
ALTER TABLE tasks ADD COLUMN scheduled_at BIGINT;
CREATE TABLE schedules (
    site         TEXT NOT NULL DEFAULT '',
    name         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    task         TEXT NOT NULL,
    args         TEXT NOT NULL,
    priority     BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    timeout      BIGINT NOT NULL,
    catch_up     TEXT NOT NULL,
    overlap      BIGINT NOT NULL,
    phase        BIGINT NOT NULL,
    next_at      BIGINT,
    last_run_at  BIGINT,
    runs         BIGINT NOT NULL DEFAULT 0,
    skipped      BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (site, name)
);
CREATE UNIQUE INDEX tasks_schedule_pending ON tasks(site, schedule)
    WHERE schedule IS NOT NULL AND state = 'queued' AND started_at IS NULL;
CREATE UNIQUE INDEX tasks_occurrence ON tasks(site, schedule, scheduled_at)
    WHERE schedule IS NOT NULL;
"#
    };
}

/// Schema 6 (SQLite) and 4 (PostgreSQL): the live-events hub's history,
/// leases and subscribers (see `hub::tables`). `$seq` is each backend's
/// auto-incrementing key.
macro_rules! hub_schema {
    ($seq:literal) => {
        concat!(
            "CREATE TABLE hub_events (\n    seq ",
            $seq,
            r#",
    site       TEXT NOT NULL,
    id         TEXT NOT NULL,
    topics     TEXT NOT NULL,
    data       TEXT NOT NULL,
    private    BIGINT NOT NULL,
    type       TEXT,
    retry      BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX hub_events_id ON hub_events(site, id);
CREATE INDEX hub_events_site ON hub_events(site, seq);
CREATE INDEX hub_events_created ON hub_events(created_at);
CREATE TABLE hub_leases (
    site     TEXT NOT NULL,
    server   TEXT NOT NULL,
    holder   TEXT NOT NULL,
    listen   TEXT NOT NULL,
    until_at BIGINT NOT NULL,
    PRIMARY KEY (site, server)
);
CREATE TABLE hub_subscribers (
    site       TEXT NOT NULL,
    server     TEXT NOT NULL,
    holder     TEXT NOT NULL,
    subscriber TEXT NOT NULL,
    topic      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    since_at   BIGINT NOT NULL,
    PRIMARY KEY (site, subscriber, topic)
);
CREATE INDEX hub_subscribers_topic ON hub_subscribers(site, topic);
"#
        )
    };
}

/// Schema 7 (SQLite) and 5 (PostgreSQL): fewer indexes for `defer()` to
/// write (a queued task goes into the table, `tasks_claim` and the unique
/// index when it has a key). The earliest due time of an endpoint comes from
/// `tasks_claim`, one seek per priority (`due::earliest_due`), and the state
/// index holds only tasks that left the queue: queued ones are found through
/// `tasks_claim` (see docs/architecture.md, "Indexes").
macro_rules! lean_indexes {
    () => {
        r#"
DROP INDEX tasks_next_due;
DROP INDEX tasks_state;
CREATE INDEX tasks_state ON tasks(site, state, id) WHERE state <> 'queued';
"#
    };
}

/// Schema 8 (SQLite) and 6 (PostgreSQL): the state index leads with the
/// state, so running tasks (few) are found by it across sites, and
/// `tasks_lease` goes: a task that starts or ends writes one index page
/// less (see docs/architecture.md, "Indexes").
macro_rules! state_first {
    () => {
        r#"
DROP INDEX tasks_lease;
DROP INDEX tasks_state;
CREATE INDEX tasks_state ON tasks(state, site, id) WHERE state <> 'queued';
"#
    };
}

/// Schema 12 (SQLite) and 7 (PostgreSQL): the process holding each slot
/// (`holder.rs`), so a slot whose process died is freed at once rather than
/// at its deadline (see docs/architecture.md, "Dead workers").
macro_rules! slot_holder {
    () => {
        "\nALTER TABLE slots ADD COLUMN holder TEXT;\n"
    };
}

/// SQLite schema migrations; entry `i` takes the database from version `i`
/// to `i + 1`.
pub(crate) const SQLITE_MIGRATIONS: [&str; 12] = [
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Server-wide: when each endpoint is next due (NULL while a request for it
-- is on its way, or when it has nothing queued).
CREATE TABLE endpoints (
    endpoint TEXT PRIMARY KEY,
    next_due INTEGER
) WITHOUT ROWID;
CREATE INDEX endpoints_due ON endpoints(next_due) WHERE next_due IS NOT NULL;

-- Server-wide: task requests in flight. 'sent': signed and on its way;
-- 'accepted': the endpoint took it and is running tasks.
CREATE TABLE slots (
    id         TEXT PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sent', 'accepted')),
    deadline   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Per endpoint: the task queues.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    priority     INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout      INTEGER NOT NULL,
    unique_key   TEXT,
    lease        TEXT,
    lease_until  INTEGER,
    slot_id      TEXT,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER
);
CREATE INDEX tasks_claim ON tasks(endpoint, priority DESC, due_at, id) WHERE state = 'queued';
CREATE INDEX tasks_next_due ON tasks(endpoint, due_at) WHERE state = 'queued';
CREATE INDEX tasks_lease ON tasks(lease_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_state ON tasks(state);
CREATE UNIQUE INDEX tasks_unique ON tasks(unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
"#,
    r#"
-- 2: a state's tasks newest first straight from the index (tasks(), the
-- status page), not by sorting every task in that state.
DROP INDEX tasks_state;
CREATE INDEX tasks_state ON tasks(state, id);
"#,
    r#"
-- 3: slots belong to a server (max_workers counts each server's own).
ALTER TABLE slots ADD COLUMN server TEXT NOT NULL DEFAULT '';
"#,
    concat!(
        r#"
-- 4: tasks, slots and endpoints belong to a site; endpoints count their
-- queued tasks (max_queued) and back off after failed deliveries.
ALTER TABLE tasks ADD COLUMN site TEXT NOT NULL DEFAULT '';
ALTER TABLE slots ADD COLUMN site TEXT NOT NULL DEFAULT '';
CREATE TABLE endpoints_4 (
    site       TEXT NOT NULL DEFAULT '',
    endpoint   TEXT NOT NULL,
    next_due   INTEGER,
    queued     INTEGER NOT NULL DEFAULT 0,
    failures   INTEGER NOT NULL DEFAULT 0,
    retry_at   INTEGER,
    last_error TEXT,
    PRIMARY KEY (site, endpoint)
) WITHOUT ROWID;
INSERT INTO endpoints_4 (endpoint, next_due, queued)
    SELECT endpoint, next_due, (SELECT count(*) FROM tasks
        WHERE tasks.endpoint = endpoints.endpoint AND tasks.state = 'queued')
    FROM endpoints;
DROP TABLE endpoints;
ALTER TABLE endpoints_4 RENAME TO endpoints;
"#,
        site_indexes!()
    ),
    concat!("-- 5: recurring schedules.", schedule_schema!()),
    concat!(
        "-- 6: the live-events hub.\n",
        hub_schema!("INTEGER PRIMARY KEY AUTOINCREMENT")
    ),
    concat!("-- 7: fewer indexes on tasks.", lean_indexes!()),
    concat!("-- 8: running tasks found by state.", state_first!()),
    r#"
-- 9: the tasks table keyed by id itself (WITHOUT ROWID): a new task writes
-- its row and its id in one b-tree instead of two (the table and its
-- primary key's index), and a task found by id is one lookup. Same
-- columns, in the same order, and the same indexes.
CREATE TABLE tasks_9 (
    id           TEXT PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    priority     INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout      INTEGER NOT NULL,
    unique_key   TEXT,
    lease        TEXT,
    lease_until  INTEGER,
    slot_id      TEXT,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    site         TEXT NOT NULL DEFAULT '',
    schedule     TEXT,
    scheduled_at BIGINT
) WITHOUT ROWID;
INSERT INTO tasks_9 SELECT id, endpoint, name, args, state, priority, due_at, attempt,
    max_attempts, timeout, unique_key, lease, lease_until, slot_id, last_error, created_at,
    updated_at, started_at, finished_at, site, schedule, scheduled_at FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_9 RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks(site, endpoint, priority DESC, due_at, id) WHERE state = 'queued';
CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_state ON tasks(state, site, id) WHERE state <> 'queued';
CREATE UNIQUE INDEX tasks_unique ON tasks(site, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
CREATE UNIQUE INDEX tasks_schedule_pending ON tasks(site, schedule)
    WHERE schedule IS NOT NULL AND state = 'queued' AND started_at IS NULL;
CREATE UNIQUE INDEX tasks_occurrence ON tasks(site, schedule, scheduled_at)
    WHERE schedule IS NOT NULL;
"#,
    r#"
-- 10: finished tasks (done, dead, cancelled) counted per site and state, so
-- that stats() reads three numbers instead of walking every task kept for
-- the retention period. Triggers keep the counts in the transaction that
-- moves a task: tasks reach these states only by an update of their state
-- and leave them by another one (retry) or by their deletion (purge). No
-- trigger watches inserts (tasks are inserted queued): one would cost each
-- defer() about 2 µs. A later migration that rebuilds the tasks table must
-- create the triggers again.
CREATE TABLE task_counts (
    site  TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (site, state)
) WITHOUT ROWID;
INSERT INTO task_counts (site, state, n)
    SELECT site, state, count(*) FROM tasks
    WHERE state IN ('done', 'dead', 'cancelled') GROUP BY site, state;
CREATE TRIGGER task_counts_move AFTER UPDATE OF state ON tasks
    WHEN NEW.state IS NOT OLD.state
        AND (NEW.state IN ('done', 'dead', 'cancelled') OR OLD.state IN ('done', 'dead', 'cancelled'))
BEGIN
    INSERT INTO task_counts (site, state, n)
        SELECT NEW.site, NEW.state, 1 WHERE NEW.state IN ('done', 'dead', 'cancelled')
        ON CONFLICT (site, state) DO UPDATE SET n = n + 1;
    UPDATE task_counts SET n = n - 1
        WHERE site = OLD.site AND state = OLD.state AND OLD.state IN ('done', 'dead', 'cancelled');
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
    WHEN OLD.state IN ('done', 'dead', 'cancelled')
BEGIN
    UPDATE task_counts SET n = n - 1 WHERE site = OLD.site AND state = OLD.state;
END;
"#,
    r#"
-- 11: the same checks without lists of three or more states. SQLite tests
-- `x IN (a, b, c)` by filling a temporary b-tree with the list each time a
-- statement runs: the tasks table's state CHECK did so on every insert and
-- every change of state (about 1.2 µs each), the counting triggers twice
-- per change of state. Tasks have five states, so the finished ones are
-- those neither queued nor running, and two-item lists are compared
-- directly. The CHECK is rewritten in place, SQLite's documented way to
-- change a constraint the stored rows already satisfy: the triggers' DDL
-- tells every other connection to read the schema again, RESET this one.
DROP TRIGGER task_counts_move;
DROP TRIGGER task_counts_delete;
CREATE TRIGGER task_counts_move AFTER UPDATE OF state ON tasks
    WHEN NEW.state IS NOT OLD.state
        AND (NEW.state NOT IN ('queued', 'running') OR OLD.state NOT IN ('queued', 'running'))
BEGIN
    INSERT INTO task_counts (site, state, n)
        SELECT NEW.site, NEW.state, 1 WHERE NEW.state NOT IN ('queued', 'running')
        ON CONFLICT (site, state) DO UPDATE SET n = n + 1;
    UPDATE task_counts SET n = n - 1
        WHERE site = OLD.site AND state = OLD.state AND OLD.state NOT IN ('queued', 'running');
END;
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
    WHEN OLD.state NOT IN ('queued', 'running')
BEGIN
    UPDATE task_counts SET n = n - 1 WHERE site = OLD.site AND state = OLD.state;
END;
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
        'CHECK (state IN (''queued'', ''running'', ''done'', ''dead'', ''cancelled''))',
        'CHECK (state = ''queued'' OR state = ''running'' OR state = ''done''
                        OR state = ''dead'' OR state = ''cancelled'')')
    WHERE type = 'table' AND name = 'tasks';
PRAGMA writable_schema = RESET;
"#,
    concat!("-- 12: the process holding each slot.", slot_holder!()),
];

/// The PostgreSQL schema version this build writes; newer databases are
/// refused.
pub const PG_SCHEMA_VERSION: i64 = 7;

/// PostgreSQL schema migrations; entry `i` takes the database from version
/// `i` to `i + 1`.
pub(crate) const PG_MIGRATIONS: [&str; 7] = [
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE endpoints (
    endpoint TEXT PRIMARY KEY,
    next_due BIGINT
);
CREATE INDEX endpoints_due ON endpoints(next_due) WHERE next_due IS NOT NULL;
CREATE TABLE slots (
    id         TEXT PRIMARY KEY,
    server     TEXT NOT NULL,
    endpoint   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sent', 'accepted')),
    deadline   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX slots_server ON slots(server);
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    name         TEXT NOT NULL,
    args         TEXT NOT NULL,
    state        TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled')),
    priority     BIGINT NOT NULL DEFAULT 0,
    due_at       BIGINT NOT NULL,
    attempt      BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    timeout      BIGINT NOT NULL,
    unique_key   TEXT,
    lease        TEXT,
    lease_until  BIGINT,
    slot_id      TEXT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT
);
CREATE INDEX tasks_claim ON tasks(endpoint, priority DESC, due_at, id) WHERE state = 'queued';
CREATE INDEX tasks_next_due ON tasks(endpoint, due_at) WHERE state = 'queued';
CREATE INDEX tasks_lease ON tasks(lease_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_state ON tasks(state, id);
CREATE UNIQUE INDEX tasks_unique ON tasks(unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('queued', 'running');
"#,
    concat!(
        r#"
-- 2: tasks, slots and endpoints belong to a site; endpoints count their
-- queued tasks (max_queued) and back off after failed deliveries.
ALTER TABLE tasks ADD COLUMN site TEXT NOT NULL DEFAULT '';
ALTER TABLE slots ADD COLUMN site TEXT NOT NULL DEFAULT '';
ALTER TABLE endpoints ADD COLUMN site TEXT NOT NULL DEFAULT '',
    ADD COLUMN queued BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN failures BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN retry_at BIGINT,
    ADD COLUMN last_error TEXT;
ALTER TABLE endpoints DROP CONSTRAINT endpoints_pkey;
ALTER TABLE endpoints ADD PRIMARY KEY (site, endpoint);
DROP INDEX endpoints_due;
UPDATE endpoints SET queued = (SELECT count(*) FROM tasks
    WHERE tasks.endpoint = endpoints.endpoint AND tasks.state = 'queued');
"#,
        site_indexes!()
    ),
    concat!("-- 3: recurring schedules.", schedule_schema!()),
    concat!(
        "-- 4: the live-events hub.\n",
        hub_schema!("BIGSERIAL PRIMARY KEY")
    ),
    concat!("-- 5: fewer indexes on tasks.", lean_indexes!()),
    concat!("-- 6: running tasks found by state.", state_first!()),
    concat!("-- 7: the process holding each slot.", slot_holder!()),
];

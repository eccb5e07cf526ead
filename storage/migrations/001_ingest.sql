-- Alerts as they arrived: committed before the sender gets 202, drained by the pipeline worker.
CREATE TABLE inbox (
    id              INTEGER PRIMARY KEY,
    source          TEXT    NOT NULL,              -- glitchtip | generic
    received_at     TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL DEFAULT 0,    -- unix time
    last_error      TEXT,
    processed_at    TEXT
);
CREATE INDEX inbox_pending ON inbox (next_attempt_at, id) WHERE state = 'pending';

-- One row per open (or resolved) problem; repeats raise `count` on the open row.
CREATE TABLE incidents (
    id                INTEGER PRIMARY KEY,
    fingerprint       TEXT    NOT NULL,
    status            TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    source            TEXT    NOT NULL,
    kind              TEXT    NOT NULL,
    title             TEXT    NOT NULL,
    message           TEXT    NOT NULL DEFAULT '',
    level             TEXT,
    project           TEXT,
    environment       TEXT,
    release           TEXT,
    server            TEXT,
    url               TEXT,
    stacktrace        TEXT    NOT NULL DEFAULT '',
    external_id       TEXT,
    tags_json         TEXT    NOT NULL DEFAULT '{}',
    count             INTEGER NOT NULL DEFAULT 1,
    first_seen        TEXT    NOT NULL,
    last_seen         TEXT    NOT NULL,
    priority          TEXT    NOT NULL,
    priority_original TEXT    NOT NULL,            -- as triaged; `priority` may be corrected by a human
    category          TEXT    NOT NULL,
    triage_json       TEXT    NOT NULL,
    regression_of     INTEGER REFERENCES incidents (id),
    chat_id           INTEGER,
    card_message_id   INTEGER,
    muted_until       TEXT,
    resolved_at       TEXT,
    resolved_by       TEXT
);
CREATE UNIQUE INDEX incidents_one_open_per_fingerprint ON incidents (fingerprint) WHERE status = 'open';
CREATE INDEX incidents_fingerprint ON incidents (fingerprint, id);

-- Every Telegram send or edit, recorded before it is attempted.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    chat_id         INTEGER NOT NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('send', 'edit')),
    incident_id     INTEGER REFERENCES incidents (id),  -- card rows: the sent message id goes on the incident
    message_id      INTEGER,                            -- edit of a non-card message
    reply_to        INTEGER,
    payload         TEXT    NOT NULL,                   -- JSON: text, buttons
    version         INTEGER NOT NULL DEFAULT 1,         -- bumped when a pending payload is replaced
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    sent_at         TEXT,
    last_error      TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE state = 'pending';
CREATE INDEX outbox_incident_pending ON outbox (incident_id) WHERE state = 'pending';

-- Append-only: triggers refuse UPDATE and DELETE.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at          TEXT    NOT NULL,
    actor_id    INTEGER,
    actor_name  TEXT,
    action      TEXT    NOT NULL,
    incident_id INTEGER,
    proposal_id INTEGER,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_incident ON audit (incident_id);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;

-- Small durable state: kill switch, last alert time.
CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

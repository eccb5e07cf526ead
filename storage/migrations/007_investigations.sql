-- Issue 11: investigations (🔎 Investigate, /investigate <id>) and what people said of their reports.

-- One row per investigation asked for: written in the press's transaction, before any work, so a
-- crash can never lose one silently. A row left 'queued' or 'running' by a crash is marked
-- 'interrupted' at the next start (and said in the chat); a new press starts a new one.
CREATE TABLE investigations (
    id            INTEGER PRIMARY KEY,
    incident_id   INTEGER NOT NULL REFERENCES incidents (id),
    state         TEXT    NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'done', 'failed', 'interrupted')),
    requested_by  TEXT    NOT NULL,
    requested_id  INTEGER NOT NULL,
    via           TEXT    NOT NULL,                -- button | command
    requested_at  TEXT    NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    report_html   TEXT,                            -- the chat reply as sent (redacted, escaped)
    error         TEXT
);
-- One investigation at a time per incident: a second press while one runs is told so.
CREATE UNIQUE INDEX investigations_one_active ON investigations (incident_id) WHERE state IN ('queued', 'running');

-- 👍 / 👎 on a report: one vote per person per report, changeable (the latest counts).
CREATE TABLE investigation_votes (
    investigation_id INTEGER NOT NULL REFERENCES investigations (id),
    user_id          INTEGER NOT NULL,
    user_name        TEXT    NOT NULL,
    helpful          INTEGER NOT NULL CHECK (helpful IN (0, 1)),
    voted_at         TEXT    NOT NULL,
    PRIMARY KEY (investigation_id, user_id)
);
CREATE INDEX investigation_votes_at ON investigation_votes (voted_at);

-- Similar past incidents: normalised title, culprit and stack (numbers, ids and hex masked), keyed
-- by the incident id. Filled from Python before each search (the normalising is Python's), so the
-- pipeline's hot path writes nothing here.
CREATE VIRTUAL TABLE incident_search USING fts5 (title, culprit, stack, tokenize = 'unicode61');

-- Issue 12: GitHub issues filed after a press. With GITHUB_TOKEN/GITHUB_REPO unset both tables stay empty.

-- One row per incident that was asked to have a GitHub issue: the intent, recorded before any
-- call, so the issue is filed exactly once per incident (GitHub has no idempotency key).
CREATE TABLE github_issues (
    incident_id    INTEGER PRIMARY KEY REFERENCES incidents (id),
    repo           TEXT    NOT NULL,                -- owner/name
    state          TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'filed', 'failed')),
    proposal_id    INTEGER REFERENCES proposals (id), -- the approval that asked for it (the latest)
    approved_by    TEXT,
    requested_at   TEXT    NOT NULL,
    create_sent_at TEXT,                            -- a create may have reached GitHub since: look before another
    number         INTEGER,
    html_url       TEXT,
    assignee       TEXT,                            -- the GitHub login assigned, NULL when none could be
    filed_at       TEXT,
    found_existing INTEGER NOT NULL DEFAULT 0,      -- linked to an issue found by its marker, not created now
    problem        TEXT,                            -- why it is not filed (yet): GitHub's own message; on the card
    comment_state  TEXT CHECK (comment_state IN ('pending', 'done', 'failed')), -- "resolved in chat by …"
    comment_note   TEXT
);

-- Work for the GitHub worker: durable, so a crash or an outage delays it, never loses it.
CREATE TABLE github_jobs (
    id              INTEGER PRIMARY KEY,
    incident_id     INTEGER NOT NULL REFERENCES incidents (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('create', 'comment')),
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,     -- tries that failed for a reason of their own (not an outage)
    next_attempt_at REAL    NOT NULL DEFAULT 0,     -- unix time
    created_at      TEXT    NOT NULL,
    sent_at         TEXT,                           -- comment: the POST may have reached GitHub since then
    payload_json    TEXT,                           -- comment: who resolved, how, when
    finished_at     TEXT,
    last_error      TEXT
);
CREATE UNIQUE INDEX github_jobs_one_pending ON github_jobs (incident_id, kind) WHERE state = 'pending';
CREATE INDEX github_jobs_due ON github_jobs (next_attempt_at, id) WHERE state = 'pending';

-- At most one live proposal per incident: the next step the card suggests.
CREATE TABLE proposals (
    id                 INTEGER PRIMARY KEY,
    incident_id        INTEGER NOT NULL REFERENCES incidents (id),
    kind               TEXT    NOT NULL,            -- acknowledge | pattern
    summary            TEXT    NOT NULL,
    pattern_id         TEXT,
    action_json        TEXT,                        -- rendered argv steps, verify, timeouts
    requires_approval  INTEGER NOT NULL DEFAULT 1,
    approvals_required INTEGER NOT NULL DEFAULT 1,
    state              TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN
                       ('pending', 'approved', 'running', 'succeeded', 'failed', 'rejected', 'expired', 'superseded')),
    created_at         TEXT    NOT NULL,
    expires_at         TEXT    NOT NULL,
    decided_by         TEXT,
    decided_by_id      INTEGER,
    decided_at         TEXT,
    started_at         TEXT,
    finished_at        TEXT,
    result             TEXT
);
CREATE INDEX proposals_incident ON proposals (incident_id, id);
CREATE INDEX proposals_live ON proposals (state) WHERE state IN ('pending', 'approved', 'running');

-- One row per approver per proposal: pressing twice counts once.
CREATE TABLE approvals (
    proposal_id INTEGER NOT NULL REFERENCES proposals (id),
    user_id     INTEGER NOT NULL,
    user_name   TEXT,
    at          TEXT    NOT NULL,
    PRIMARY KEY (proposal_id, user_id)
);

-- Human corrections of the triaged priority: what the triage-accuracy metric reads.
CREATE TABLE priority_corrections (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    original    TEXT    NOT NULL,
    corrected   TEXT    NOT NULL,
    user_id     INTEGER,
    user_name   TEXT,
    at          TEXT    NOT NULL
);

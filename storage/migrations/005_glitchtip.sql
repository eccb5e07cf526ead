-- Issue 10: GlitchTip's API. Only incidents from GlitchTip get a link, and only while
-- GLITCHTIP_URL and GLITCHTIP_TOKEN are set: with the API off both tables stay empty.

-- One row per incident that stands for a GlitchTip issue or uptime monitor.
CREATE TABLE glitchtip_links (
    incident_id   INTEGER PRIMARY KEY REFERENCES incidents (id),
    kind          TEXT    NOT NULL CHECK (kind IN ('issue', 'monitor')),
    external_id   TEXT    NOT NULL,                -- GlitchTip's issue / monitor id
    org           TEXT,                            -- organisation slug (monitors are read per organisation)
    details_json  TEXT,                            -- what the card shows (redacted); NULL until read
    fetched_at    TEXT,
    problem       TEXT,                            -- why details are missing or stale, shown on the card
    api_status    TEXT,                            -- the issue's status in GlitchTip as last read ('gone' after a 404)
    api_last_seen TEXT,                            -- GlitchTip's lastSeen: which incidents the refresh reads
    resolve_state TEXT CHECK (resolve_state IN ('pending', 'done', 'failed', 'skipped')),
    resolve_note  TEXT,
    comebacks     INTEGER NOT NULL DEFAULT 0,      -- times it came back in GlitchTip while open here
    comeback_at   TEXT
);
CREATE INDEX glitchtip_links_upstream_resolved ON glitchtip_links (incident_id) WHERE api_status = 'resolved';

-- Work for the GlitchTip worker: durable, so a crash or an API outage delays it, never loses it.
CREATE TABLE glitchtip_jobs (
    id              INTEGER PRIMARY KEY,
    incident_id     INTEGER NOT NULL REFERENCES incidents (id),
    kind            TEXT    NOT NULL CHECK (kind IN ('enrich', 'refresh', 'resolve')),
    state           TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,    -- failures that were this job's own (not an outage)
    next_attempt_at REAL    NOT NULL DEFAULT 0,    -- unix time
    created_at      TEXT    NOT NULL,
    finished_at     TEXT,
    last_error      TEXT
);
-- At most one pending job of a kind per incident: asking twice is asking once.
CREATE UNIQUE INDEX glitchtip_jobs_one_pending ON glitchtip_jobs (incident_id, kind) WHERE state = 'pending';
CREATE INDEX glitchtip_jobs_due ON glitchtip_jobs (next_attempt_at, id) WHERE state = 'pending';

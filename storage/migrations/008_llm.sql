-- Issue 11: Claude calls (spend cap), Claude triage results per fingerprint, triage source per incident.

-- Every Claude call, ok or failed, with its token usage and estimated cost (prices from LLM_PRICES_FILE).
-- The daily budget (LLM_DAILY_BUDGET_USD) is the sum of cost_usd since the start of the day.
CREATE TABLE llm_calls (
    id            INTEGER PRIMARY KEY,
    at            TEXT    NOT NULL,
    purpose       TEXT    NOT NULL,               -- triage | investigate | …
    model         TEXT    NOT NULL,
    incident_id   INTEGER,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL    NOT NULL DEFAULT 0,
    ok            INTEGER NOT NULL CHECK (ok IN (0, 1)),
    error         TEXT
);
CREATE INDEX llm_calls_at ON llm_calls (at);

-- Claude's triage of a fingerprint: a repeat of a known fingerprint reuses it instead of a new call.
CREATE TABLE llm_triage_cache (
    fingerprint TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    triage_json TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- Who triaged each incident (metrics report triage accuracy by source); whether Claude was asked
-- (NULL: no; 'pending' survives a crash and is asked again at the next start); and why Claude's
-- answer was not used when it failed ("rate limited (429)", "daily budget spent ($5.00)", …).
ALTER TABLE incidents ADD COLUMN triage_source TEXT NOT NULL DEFAULT 'rules' CHECK (triage_source IN ('rules', 'claude'));
ALTER TABLE incidents ADD COLUMN claude_state TEXT CHECK (claude_state IN ('pending', 'done', 'failed'));
ALTER TABLE incidents ADD COLUMN triage_fallback TEXT;
CREATE INDEX incidents_claude_pending ON incidents (id) WHERE claude_state = 'pending';

-- Issue 13: triage that learns from corrections (bot/overrides.py).

-- A rule + project pair the digest or /stats offered to override, because humans corrected its
-- priority the same way often enough. The Apply button carries the offer's id (callback data
-- must stay under 64 bytes; a rule id or project name may not). Showing it again refreshes the count.
CREATE TABLE priority_override_offers (
    id          INTEGER PRIMARY KEY,
    rule_id     TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    priority    TEXT    NOT NULL CHECK (priority IN ('P0', 'P1', 'P2', 'P3')),
    corrections INTEGER NOT NULL,  -- corrected to `priority` this many times when last offered
    triaged     INTEGER NOT NULL,  -- out of this many incidents the rule triaged in that project
    offered_at  TEXT    NOT NULL,
    UNIQUE (rule_id, project, priority)
);

-- New incidents triaged by `rule_id` in `project` get `priority`. Removing one keeps the row (who
-- applied and removed it, and when); at most one live override per rule + project.
CREATE TABLE priority_overrides (
    id            INTEGER PRIMARY KEY,
    rule_id       TEXT    NOT NULL,
    project       TEXT    NOT NULL,
    priority      TEXT    NOT NULL CHECK (priority IN ('P0', 'P1', 'P2', 'P3')),
    corrections   INTEGER NOT NULL,  -- the human corrections it rests on
    offer_id      INTEGER REFERENCES priority_override_offers (id),
    applied_by    TEXT    NOT NULL,
    applied_by_id INTEGER NOT NULL,
    applied_at    TEXT    NOT NULL,
    removed_by    TEXT,
    removed_by_id INTEGER,
    removed_at    TEXT
);
CREATE UNIQUE INDEX priority_overrides_live ON priority_overrides (rule_id, project) WHERE removed_at IS NULL;

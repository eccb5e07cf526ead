-- Issue 13, priority overrides: an Apply offer belongs to the message that showed it.
--
-- Before, one offer row per rule + project + priority was refreshed by each showing, so a button
-- under an old digest became "current" again whenever a newer /stats showed the same pair, and
-- could re-apply an override a person had removed in between. Now each showing (a digest, a
-- /stats reply) gets its own row, and its Apply button carries that row's id. `pair_changes`
-- counts the pair's override events (each apply, each removal) when it was shown: a press whose
-- pair has changed since then is stale and changes nothing (bot/overrides.py `apply`). Counting
-- instead of comparing timestamps means a change and a showing in the same millisecond cannot be
-- confused.
CREATE TABLE priority_override_showings (
    id           INTEGER PRIMARY KEY,
    offer_id     INTEGER NOT NULL REFERENCES priority_override_offers (id),  -- the rule + project + priority
    corrections  INTEGER NOT NULL,  -- corrected to the offer's priority this many times when shown
    triaged      INTEGER NOT NULL,  -- out of this many incidents the rule triaged in that project
    pair_changes INTEGER NOT NULL,  -- overrides of the pair applied + removed before it was shown
    shown_at     TEXT    NOT NULL
);

-- Buttons shown before this migration carry the offer's id: the same id names its last showing,
-- with the pair's changes counted as they stood when it was last shown.
INSERT INTO priority_override_showings (id, offer_id, corrections, triaged, pair_changes, shown_at)
SELECT o.id, o.id, o.corrections, o.triaged,
       (SELECT COUNT(*) FROM priority_overrides p
         WHERE p.rule_id = o.rule_id AND p.project = o.project AND p.applied_at < o.offered_at)
     + (SELECT COUNT(*) FROM priority_overrides p
         WHERE p.rule_id = o.rule_id AND p.project = o.project AND p.removed_at < o.offered_at),
       o.offered_at
  FROM priority_override_offers o;

-- Which showing an override was applied from (NULL for overrides applied before this migration).
ALTER TABLE priority_overrides ADD COLUMN showing_id INTEGER REFERENCES priority_override_showings (id);

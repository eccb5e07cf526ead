-- Issue 7: storms and poison alerts.
-- The outbox sends by priority (0 = P0 card … 9 = least urgent), so a P0 card never waits
-- behind a queue of lower ones; rows of one priority keep their order.
ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
CREATE INDEX outbox_pending_priority ON outbox (chat_id, priority, id) WHERE state = 'pending';
-- An incident opened beyond the storm limit gets no card of its own: 1 = waiting for the storm
-- summary, 2 = named in a summary message (a human can still ask for its card).
ALTER TABLE incidents ADD COLUMN card_deferred INTEGER NOT NULL DEFAULT 0;
CREATE INDEX incidents_card_deferred ON incidents (id) WHERE card_deferred = 1;
-- Set (committed) before a row's work starts and cleared when it ends: a row found `started`
-- was interrupted (crash, or a time budget blown), and is retried alone, then parked.
ALTER TABLE inbox ADD COLUMN started INTEGER NOT NULL DEFAULT 0;

-- Permanent (4xx) failures are counted apart from outage retries, so a row that waited out a
-- long Telegram outage is not parked on its first real error.
ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;

-- A photo or document queued in the outbox: its bytes live beside the row, committed with it,
-- so a crash between the commit and the upload loses nothing. Deleted once Telegram has it.
CREATE TABLE outbox_files (
    outbox_id   INTEGER PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('photo', 'document')),
    filename    TEXT    NOT NULL,
    content     BLOB    NOT NULL
);

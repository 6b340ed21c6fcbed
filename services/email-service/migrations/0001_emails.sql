-- One confirmation per order: the primary key is what makes the email go out once.
CREATE TABLE emails (
    order_id   TEXT PRIMARY KEY,
    recipient  TEXT NOT NULL,
    message_id TEXT NOT NULL,
    transport  TEXT NOT NULL,
    sent_at    TEXT NOT NULL
);

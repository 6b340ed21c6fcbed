-- Append-only audit trail of every order event, keyed by its sequence in the ORDERS stream.
-- An event republished under another sequence (a dead letter replayed) is recorded once: event_id
-- is unique too.
CREATE TABLE audit_events (
    stream_seq   BIGINT PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    order_id     TEXT NOT NULL,
    subject      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    headers      TEXT NOT NULL,
    payload      TEXT NOT NULL,
    published_at TEXT NOT NULL,
    published_ms BIGINT NOT NULL,
    recorded_at  TEXT NOT NULL
);

CREATE INDEX audit_events_order ON audit_events (order_id, stream_seq);
CREATE INDEX audit_events_published ON audit_events (published_ms);

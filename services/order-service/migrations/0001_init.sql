-- Orders as the HTTP API returns them; items are stored as their JSON array.
CREATE TABLE orders (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    email               TEXT,
    items               TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    -- The client's Idempotency-Key, when given: a replay returns this order.
    idempotency_key     TEXT UNIQUE,
    -- Fingerprint of the request body, to tell a replay from a reused key.
    request_fingerprint TEXT NOT NULL
);

CREATE INDEX orders_user ON orders (user_id, created_at);

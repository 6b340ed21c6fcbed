-- Stock per SKU: `available` can be reserved; `reserved` is held by orders not yet committed.
CREATE TABLE stock (
    sku       TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved  BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);

-- One reservation per order id: this is what makes `inventory.reserve` idempotent.
CREATE TABLE reservations (
    order_id   TEXT PRIMARY KEY,
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'committed', 'released')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- Unix milliseconds after which an uncommitted reservation may be released.
    expires_at BIGINT NOT NULL
);

CREATE TABLE reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku      TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

CREATE INDEX reservations_expiry ON reservations (status, expires_at);

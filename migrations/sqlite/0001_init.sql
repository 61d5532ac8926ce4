-- salestrack schema. Times are integer epoch milliseconds; money is integer
-- minor units with its currency. Nothing is ever deleted by the system.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE clients (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    domain               TEXT,
    stripe_account       TEXT,
    stripe_api_key       TEXT,
    window_primary_days  INTEGER NOT NULL DEFAULT 60,
    window_fallback_days INTEGER NOT NULL DEFAULT 90,
    any_time_fallback    INTEGER NOT NULL DEFAULT 1,
    created_at           INTEGER NOT NULL
);

CREATE TABLE webhook_secrets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id  TEXT NOT NULL REFERENCES clients(id),
    secret     TEXT NOT NULL,
    active     INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    UNIQUE (client_id, secret)
);

CREATE TABLE links (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients(id),
    slug        TEXT NOT NULL,
    destination TEXT NOT NULL,
    label       TEXT,
    created_at  INTEGER NOT NULL,
    UNIQUE (client_id, slug)
);
CREATE INDEX links_slug ON links (slug);

CREATE TABLE link_promo_codes (
    link_id   TEXT NOT NULL REFERENCES links(id),
    client_id TEXT NOT NULL,
    code      TEXT NOT NULL,
    PRIMARY KEY (link_id, code)
);
CREATE INDEX link_promo_codes_client ON link_promo_codes (client_id, code);

CREATE TABLE clicks (
    id          TEXT PRIMARY KEY,
    link_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    visitor_id  TEXT,
    referrer    TEXT,
    landing_url TEXT,
    user_agent  TEXT,
    ip_hash     TEXT,
    bot         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX clicks_client_bot_at ON clicks (client_id, bot, at);
CREATE INDEX clicks_link_at ON clicks (link_id, at);

CREATE TABLE webhook_events (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key           TEXT UNIQUE,
    stripe_event_id     TEXT,
    event_type          TEXT,
    account             TEXT,
    livemode            INTEGER,
    api_version         TEXT,
    endpoint            TEXT NOT NULL,
    endpoint_client_id  TEXT,
    source              TEXT NOT NULL,
    received_at         INTEGER NOT NULL,
    headers             TEXT NOT NULL,
    body                BLOB NOT NULL,
    verification        TEXT NOT NULL,
    verification_reason TEXT,
    client_id           TEXT,
    client_method       TEXT,
    processing          TEXT NOT NULL,
    processing_error    TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    deliveries          INTEGER NOT NULL DEFAULT 1,
    processed_at        INTEGER
);
CREATE INDEX webhook_events_processing ON webhook_events (processing, id);
CREATE INDEX webhook_events_client ON webhook_events (client_id, id);

CREATE TABLE sale_facts (
    event_id      INTEGER PRIMARY KEY REFERENCES webhook_events(id),
    client_id     TEXT NOT NULL,
    purchase_key  TEXT NOT NULL,
    verified      INTEGER NOT NULL,
    livemode      INTEGER NOT NULL,
    client_method TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX sale_facts_purchase ON sale_facts (client_id, purchase_key);

CREATE TABLE purchase_aliases (
    client_id    TEXT NOT NULL,
    alias        TEXT NOT NULL,
    purchase_key TEXT NOT NULL,
    PRIMARY KEY (client_id, alias)
);
CREATE INDEX purchase_aliases_key ON purchase_aliases (client_id, purchase_key);

CREATE TABLE conversions (
    id            TEXT PRIMARY KEY,
    client_id     TEXT NOT NULL,
    purchase_key  TEXT NOT NULL,
    link_id       TEXT,
    click_id      TEXT,
    customer      TEXT,
    email         TEXT,
    subscription  TEXT,
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    net_amount    INTEGER NOT NULL,
    purchased_at  INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    livemode      INTEGER NOT NULL,
    verified      INTEGER NOT NULL,
    status        TEXT NOT NULL,
    method        TEXT,
    client_method TEXT NOT NULL,
    trace         TEXT NOT NULL,
    merged_into   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX conversions_live_purchase ON conversions (client_id, purchase_key)
    WHERE merged_into IS NULL;
CREATE INDEX conversions_customer ON conversions (client_id, customer);
CREATE INDEX conversions_email ON conversions (client_id, email);
CREATE INDEX conversions_link ON conversions (client_id, link_id, purchased_at);
CREATE INDEX conversions_purchased ON conversions (purchased_at);

CREATE TABLE attribution_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    conversion_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    from_link_id  TEXT,
    to_link_id    TEXT,
    from_method   TEXT,
    to_method     TEXT,
    reason        TEXT NOT NULL
);
CREATE INDEX attribution_history_conversion ON attribution_history (conversion_id, id);

CREATE TABLE admin_sessions (
    id_hash    TEXT PRIMARY KEY,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

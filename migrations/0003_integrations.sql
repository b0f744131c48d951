-- Integrations (issue 12): Stripe and Shopify webhooks in, signed webhooks out.

-- Every provider event handled, by the provider's own id (Stripe's event id,
-- Shopify's X-Shopify-Webhook-Id): a redelivery answers the first answer.
CREATE TABLE integration_events (
  source   TEXT NOT NULL,            -- stripe | shopify
  program  TEXT NOT NULL,
  event_id TEXT NOT NULL,
  type     TEXT,                     -- Stripe event type / Shopify topic
  answer   TEXT NOT NULL,            -- the JSON answered the first time
  at       TEXT NOT NULL,
  PRIMARY KEY (source, program, event_id)
);

-- Other ids of a recorded sale's payment (a Stripe payment intent or charge
-- of an invoice), so a refund or dispute that names them reverses the sale.
CREATE TABLE integration_refs (
  program TEXT NOT NULL,
  ref     TEXT NOT NULL,
  txn_id  TEXT NOT NULL,
  PRIMARY KEY (program, ref)
);

-- Outgoing webhook endpoints.
CREATE TABLE webhooks (
  id         TEXT PRIMARY KEY,
  url        TEXT NOT NULL,
  events     TEXT NOT NULL,          -- JSON array of event names
  secret     TEXT NOT NULL,          -- signs deliveries; never answered
  active     INTEGER NOT NULL DEFAULT 1,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

-- One delivery of one event to one endpoint. Conversions write theirs in the
-- same transaction as the event (an outbox); the queue carries the id.
CREATE TABLE webhook_deliveries (
  id         TEXT PRIMARY KEY,       -- wd_...
  webhook    TEXT NOT NULL,
  event      TEXT NOT NULL,          -- conversion.recorded | statement.ready | payout.created
  event_id   TEXT NOT NULL,          -- the envelope id (the same for every endpoint)
  body       TEXT NOT NULL,          -- the exact JSON sent
  status     TEXT NOT NULL DEFAULT 'pending', -- pending | retrying | delivered | failed
  attempts   INTEGER NOT NULL DEFAULT 0,      -- all attempts, over every replay
  round      INTEGER NOT NULL DEFAULT 0,      -- attempts since the last (re)play
  next_at    TEXT,                   -- when a retry is due
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, created_at);

-- Every attempt: its HTTP status or the error.
CREATE TABLE webhook_attempts (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  delivery    TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  status_code INTEGER,
  error       TEXT,
  duration_ms INTEGER,
  at          TEXT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery, attempt);

-- Events handed to POST /api/webhooks/emit with their own id (settlement's
-- statement.ready and payout.created): an id seen before is not delivered
-- again, whether or not any endpoint was subscribed the first time.
CREATE TABLE webhook_events (
  id         TEXT PRIMARY KEY,       -- the sender's event id, the envelope id
  event      TEXT NOT NULL,          -- statement.ready | payout.created
  hash       TEXT NOT NULL,          -- fingerprint of event + data (duplicate vs conflict)
  nonce      TEXT NOT NULL,          -- the request that stored it (its deliveries are written with it)
  created_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- The durable record of the edge. Programs, partners, links and coupons are
-- the registry (mirrored into KV for the redirect path); events are the
-- append-only log that settlement pulls through the export API.

CREATE TABLE programs (
  num        INTEGER PRIMARY KEY,          -- compact id carried in click ids
  id         TEXT NOT NULL UNIQUE,
  settings   TEXT NOT NULL,                -- JSON, validated by the worker
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE partners (
  num        INTEGER PRIMARY KEY,
  id         TEXT NOT NULL UNIQUE,
  program    TEXT NOT NULL,
  name       TEXT,
  email      TEXT,                         -- operator contact; never exported
  email_hash TEXT,
  parent     TEXT,
  tier       TEXT,
  status     TEXT NOT NULL,
  currency   TEXT,
  history    TEXT NOT NULL DEFAULT '[]',   -- JSON [{status, at, reason}]
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE links (
  num         INTEGER PRIMARY KEY,
  slug        TEXT NOT NULL UNIQUE,
  program     TEXT NOT NULL,
  partner     TEXT NOT NULL,
  destination TEXT NOT NULL,
  status      TEXT NOT NULL DEFAULT 'active', -- active | paused
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL
);

CREATE TABLE coupons (
  code       TEXT PRIMARY KEY,
  program    TEXT NOT NULL,
  partner    TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);

CREATE TABLE events (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- the export cursor
  id           TEXT NOT NULL UNIQUE,
  type         TEXT NOT NULL,
  program      TEXT,
  ts_ms        INTEGER NOT NULL,
  dedupe_key   TEXT UNIQUE,          -- program|event|txn_id for conversions
  payload_hash TEXT,                 -- to tell duplicate from conflict
  visitor_key  TEXT,                 -- salted hash of link + visitor (unique clicks)
  uniq         INTEGER,              -- 1/0 for clicks, NULL otherwise
  record       TEXT NOT NULL         -- the SPEC section 4 record without seq/unique
);
CREATE INDEX events_visitor ON events (visitor_key, ts_ms) WHERE visitor_key IS NOT NULL;

CREATE TABLE rejections (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  at      TEXT NOT NULL,
  route   TEXT NOT NULL,
  program TEXT,
  field   TEXT NOT NULL,
  reason  TEXT NOT NULL,
  raw     TEXT NOT NULL
);

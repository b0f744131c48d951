-- The partner layer (SPEC section 3, "Partner program API"): applications and
-- approvals with an audit trail, compliance data for regulated programs,
-- partner API keys (hashed), CRM fields, deal registration, MDF budgets,
-- requests and claims, co-marketing assets and statements for the portal.
-- Money that budgets are checked against is kept in integer minor units
-- (cents) next to its decimal string, so SQL can compare it exactly.

-- CRM fields of a partner.
ALTER TABLE partners ADD COLUMN company TEXT;
ALTER TABLE partners ADD COLUMN website TEXT;
ALTER TABLE partners ADD COLUMN manager TEXT;              -- the assigned partner manager
ALTER TABLE partners ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'; -- JSON array of strings
ALTER TABLE partners ADD COLUMN notes TEXT;
CREATE INDEX partners_program ON partners (program, status);

-- The partner an event names (clicks and conversions carry it in the record):
-- a virtual column, so the writers of events stay as they are.
ALTER TABLE events ADD COLUMN partner TEXT GENERATED ALWAYS AS (json_extract(record, '$.partner')) VIRTUAL;
CREATE INDEX events_partner ON events (partner, ts_ms) WHERE partner IS NOT NULL;

-- Compliance data; required before a regulated program's partner is approved.
CREATE TABLE compliance (
  partner         TEXT PRIMARY KEY,
  license_number  TEXT NOT NULL,
  regulator       TEXT NOT NULL,
  jurisdiction    TEXT NOT NULL,
  license_expires TEXT NOT NULL,   -- RFC 3339; the partner is suspended from then on
  kyc_checked_at  TEXT NOT NULL,
  dsa_version     TEXT NOT NULL,   -- data-sharing agreement version accepted
  dsa_accepted_at TEXT NOT NULL,
  updated_at      TEXT NOT NULL
);

-- Partner API keys: only the SHA-256 of a key is kept; the key is shown once.
CREATE TABLE partner_keys (
  key_hash   TEXT PRIMARY KEY,
  partner    TEXT NOT NULL,
  hint       TEXT NOT NULL,        -- the key's first characters, to tell keys apart
  created_at TEXT NOT NULL,
  revoked_at TEXT
);
CREATE INDEX partner_keys_partner ON partner_keys (partner);

-- Every status change of a partner: who, when, from, to, why.
CREATE TABLE audit (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  partner     TEXT NOT NULL,
  at          TEXT NOT NULL,
  actor       TEXT NOT NULL,
  from_status TEXT,
  to_status   TEXT NOT NULL,
  reason      TEXT
);
CREATE INDEX audit_partner ON audit (partner, id);

-- Deal registrations. A pending or approved registration blocks others of the
-- same customer (or domain) in the program until it expires (deal_days).
CREATE TABLE deals (
  id             TEXT PRIMARY KEY,
  program        TEXT NOT NULL,
  partner        TEXT NOT NULL,
  customer       TEXT NOT NULL,
  customer_key   TEXT NOT NULL,    -- lower-cased customer, for conflicts
  company        TEXT,
  domain         TEXT,             -- lower-cased host name
  value          TEXT,             -- decimal string
  currency       TEXT,
  expected_close TEXT,             -- YYYY-MM-DD
  status         TEXT NOT NULL,    -- pending | approved | rejected
  reason         TEXT,
  created_at     TEXT NOT NULL,
  created_ms     INTEGER NOT NULL,
  expires_ms     INTEGER NOT NULL,
  expires_at     TEXT NOT NULL,    -- RFC 3339 of expires_ms
  decided_at     TEXT,
  decided_by     TEXT
);
CREATE INDEX deals_customer ON deals (program, customer_key, expires_ms);
CREATE INDEX deals_domain ON deals (program, domain, expires_ms) WHERE domain IS NOT NULL;
CREATE INDEX deals_partner ON deals (partner, created_ms);
CREATE INDEX deals_status ON deals (status, created_ms);

-- MDF budgets: per partner, or per tier (a pool shared by the program's
-- partners of that tier), per quarter. spent_minor never exceeds amount_minor.
CREATE TABLE mdf_budgets (
  id           TEXT PRIMARY KEY,
  program      TEXT NOT NULL,
  partner      TEXT,
  tier         TEXT,
  quarter      TEXT NOT NULL,      -- 2026-Q4
  amount       TEXT NOT NULL,      -- decimal string
  amount_minor INTEGER NOT NULL,
  currency     TEXT NOT NULL,
  spent_minor  INTEGER NOT NULL DEFAULT 0,
  created_at   TEXT NOT NULL,
  updated_at   TEXT NOT NULL,
  CHECK (spent_minor <= amount_minor)
);
CREATE INDEX mdf_budgets_scope ON mdf_budgets (program, quarter);

-- MDF requests and their claim (one open claim at a time; a rejected claim
-- may be claimed again).
CREATE TABLE mdf_requests (
  id            TEXT PRIMARY KEY,
  program       TEXT NOT NULL,
  partner       TEXT NOT NULL,
  budget        TEXT NOT NULL,
  activity      TEXT NOT NULL,
  amount        TEXT NOT NULL,
  amount_minor  INTEGER NOT NULL,
  currency      TEXT NOT NULL,
  status        TEXT NOT NULL,     -- requested | approved | rejected
  reason        TEXT,
  created_at    TEXT NOT NULL,
  decided_at    TEXT,
  decided_by    TEXT,
  decision_tag  TEXT,              -- ties a decision to the budget update of its batch
  claim_amount  TEXT,
  claim_minor   INTEGER,
  proof_url     TEXT,
  claim_status  TEXT,              -- claimed | approved | rejected
  claim_reason  TEXT,
  claimed_at    TEXT,
  claim_decided_at TEXT
);
CREATE INDEX mdf_requests_partner ON mdf_requests (partner, created_at);
CREATE INDEX mdf_requests_status ON mdf_requests (status, created_at);

-- Co-marketing assets, visible to partners of min_tier and above.
CREATE TABLE assets (
  id         TEXT PRIMARY KEY,
  program    TEXT NOT NULL,
  title      TEXT NOT NULL,
  kind       TEXT NOT NULL,
  url        TEXT NOT NULL,
  min_tier   TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX assets_program ON assets (program);

-- statements.csv rows pushed by settlement for the portal.
CREATE TABLE statements (
  period      TEXT NOT NULL,
  partner     TEXT NOT NULL,
  program     TEXT NOT NULL,
  currency    TEXT NOT NULL,
  earned      TEXT NOT NULL,
  reversed    TEXT NOT NULL,
  adjusted    TEXT NOT NULL,
  carried_in  TEXT NOT NULL,
  pending     TEXT NOT NULL,
  payable     TEXT NOT NULL,
  carried_out TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  PRIMARY KEY (period, partner, currency)
);
CREATE INDEX statements_partner ON statements (partner, period);

-- Erasures of customers' personal data (DELETE /api/customers/{id}): the
-- audit trail. Who and when, and the pseudonym that replaced the id; never
-- the erased id itself.
CREATE TABLE erasures (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  pseudonym TEXT NOT NULL,          -- erased:<HMAC of the id>
  at        TEXT NOT NULL,
  actor     TEXT NOT NULL,
  reason    TEXT,
  events    INTEGER NOT NULL,       -- conversions and deals pseudonymised
  clicks    INTEGER NOT NULL,       -- their clicks scrubbed
  deals     INTEGER NOT NULL        -- deal registrations pseudonymised
);
CREATE INDEX erasures_pseudonym ON erasures (pseudonym, id);

-- QuickBooks Online: the company (realm) each client is connected to, which QuickBooks
-- account each ledger account posts to, the sync state of every local record sent out, and
-- the per-realm request budget that every worker shares.
--
-- Tokens are not here: the refresh token is a secret and lives in the secret store, named
-- after the realm. A connection row says only whether syncing may go on.

CREATE TABLE quickbooks_connections (
    realm_id      text PRIMARY KEY CHECK (realm_id ~ '^[0-9]+$'),
    client_id     uuid NOT NULL UNIQUE REFERENCES clients (id),
    environment   text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'needs_reconnect', 'disconnected')),
    status_reason text,
    -- Change Data Capture resumes from here (QuickBooks' own LastUpdatedTime values).
    cdc_cursor    timestamptz,
    connected_at  timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE quickbooks_connections ENABLE ROW LEVEL SECURITY;
CREATE POLICY quickbooks_connections_client ON quickbooks_connections
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- One QuickBooks account per ledger account; 'auto' rows were matched by name and type,
-- 'manual' rows were set through the API and are never replaced by matching.
CREATE TABLE quickbooks_account_map (
    client_id        uuid NOT NULL REFERENCES clients (id),
    account_id       bigint NOT NULL REFERENCES accounts (id),
    qbo_account_id   text NOT NULL,
    qbo_account_name text NOT NULL,
    matched_by       text NOT NULL CHECK (matched_by IN ('auto', 'manual')),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, account_id)
);
ALTER TABLE quickbooks_account_map ENABLE ROW LEVEL SECURITY;
CREATE POLICY quickbooks_account_map_client ON quickbooks_account_map
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- One row per local record that goes to QuickBooks. request_id is sent with the create, so
-- a create retried after a lost answer is answered from QuickBooks' memory, not repeated.
CREATE TABLE quickbooks_sync (
    client_id   uuid NOT NULL REFERENCES clients (id),
    entity      text NOT NULL CHECK (entity IN ('Customer', 'Invoice', 'Payment', 'JournalEntry')),
    local_key   text NOT NULL CHECK (btrim(local_key) <> ''),
    request_id  uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'synced', 'failed', 'blocked')),
    qbo_id      text,
    sync_token  text,
    reason      text,
    fault       jsonb,
    -- The batch the record was last sent in: resent as the same batch, with the same
    -- requestid, until it is answered.
    batch_id    uuid,
    attempts    integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, entity, local_key),
    CHECK (status <> 'synced' OR (qbo_id IS NOT NULL AND sync_token IS NOT NULL)),
    CHECK (status NOT IN ('failed', 'blocked') OR reason IS NOT NULL)
);
CREATE INDEX quickbooks_sync_open_idx ON quickbooks_sync (client_id, entity)
    WHERE status = 'pending';
ALTER TABLE quickbooks_sync ENABLE ROW LEVEL SECURITY;
CREATE POLICY quickbooks_sync_client ON quickbooks_sync
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- The local mirror of QuickBooks entities, as webhooks and Change Data Capture report them.
CREATE TABLE quickbooks_entities (
    client_id    uuid NOT NULL REFERENCES clients (id),
    entity       text NOT NULL,
    qbo_id       text NOT NULL,
    sync_token   text,
    state        text NOT NULL CHECK (state IN ('active', 'voided', 'deleted', 'merged')),
    merged_into  text,
    last_updated timestamptz,
    data         jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, entity, qbo_id)
);
ALTER TABLE quickbooks_entities ENABLE ROW LEVEL SECURITY;
CREATE POLICY quickbooks_entities_client ON quickbooks_entities
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- The request budget of a realm, shared by every worker: a fixed window of requests, the
-- requests in flight (leases that lapse if a worker dies), a pause QuickBooks asked for
-- (Retry-After), and a circuit breaker.
CREATE TABLE quickbooks_realm_budget (
    realm_id         text PRIMARY KEY,
    paused_until     timestamptz NOT NULL DEFAULT '1970-01-01T00:00:00Z',
    failures         integer NOT NULL DEFAULT 0,
    open_until       timestamptz NOT NULL DEFAULT '1970-01-01T00:00:00Z'
);

-- One row per request granted: the rows granted within the last window are the window's
-- count (a sliding window, so no minute of QuickBooks' clock can see more than the limit),
-- the unreleased, unexpired ones are the requests in flight.
CREATE TABLE quickbooks_realm_leases (
    realm_id    text NOT NULL,
    lease_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    granted_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    released_at timestamptz,
    PRIMARY KEY (realm_id, lease_id)
);
CREATE INDEX quickbooks_realm_leases_granted_idx ON quickbooks_realm_leases (realm_id, granted_at);

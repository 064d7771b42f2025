-- Engagements: one row per client engagement, walked through its steps by a Durable
-- orchestration whose instance id is derived from the row. The orchestration's own state
-- lives in the task hub; these tables hold what the firm must be able to show afterwards.

CREATE TABLE engagements (
    id               uuid PRIMARY KEY,
    client_id        uuid NOT NULL REFERENCES clients(id),
    engagement_type  text NOT NULL,
    period           text NOT NULL,
    instance_id      text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'delivered', 'closed', 'cancelled')),
    fee_minor        bigint NOT NULL CHECK (fee_minor >= 0),
    currency         char(3) NOT NULL,
    stripe_invoice_id text,
    deliverable      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    closed_at        timestamptz,
    UNIQUE (client_id, engagement_type, period)
);

-- Documents that arrived and were classified for an engagement; one row per document.
CREATE TABLE engagement_documents (
    engagement_id uuid NOT NULL REFERENCES engagements(id),
    client_id     uuid NOT NULL REFERENCES clients(id),
    document_id   text NOT NULL,
    doc_class     text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (engagement_id, document_id)
);

-- Notifications to the client or the advisor. Recorded here; an adapter that sends them
-- reads from this table. The key makes a repeated activity record nothing new.
CREATE TABLE engagement_notifications (
    id              bigserial PRIMARY KEY,
    engagement_id   uuid NOT NULL REFERENCES engagements(id),
    client_id       uuid NOT NULL REFERENCES clients(id),
    kind            text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Events for waiting orchestrations (a document classified, an invoice paid), written in
-- the transaction of the change that caused them and relayed to the task hub afterwards.
CREATE TABLE engagement_events (
    id            bigserial PRIMARY KEY,
    engagement_id uuid NOT NULL REFERENCES engagements(id),
    client_id     uuid NOT NULL REFERENCES clients(id),
    instance_id   text NOT NULL,
    event_name    text NOT NULL,
    payload       jsonb NOT NULL,
    dedupe_key    text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    relayed_at    timestamptz
);
CREATE INDEX engagement_events_pending ON engagement_events (id) WHERE relayed_at IS NULL;

ALTER TABLE engagements ENABLE ROW LEVEL SECURITY;
CREATE POLICY engagements_client ON engagements
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE engagement_documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY engagement_documents_client ON engagement_documents
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE engagement_notifications ENABLE ROW LEVEL SECURITY;
CREATE POLICY engagement_notifications_client ON engagement_notifications
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE engagement_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY engagement_events_client ON engagement_events
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- Month-end close: once a client's period is closed, nothing dated in it or before it may
-- be posted, by any path (imports, billing, manual entries); corrections go in dated in an
-- open period. One row per client: the books are closed through locked_through.
CREATE TABLE period_locks (
    client_id      uuid PRIMARY KEY REFERENCES clients(id),
    locked_through date NOT NULL,
    locked_by      text NOT NULL,
    locked_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE period_locks ENABLE ROW LEVEL SECURITY;
CREATE POLICY period_locks_client ON period_locks
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- Checked once per statement over the rows it inserted, so a large import pays one join
-- (nothing at all while no client has a lock) rather than a lookup per row.
CREATE FUNCTION refuse_locked_period() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hit record;
BEGIN
    SELECT n.client_id, n.booked_on, p.locked_through INTO hit
    FROM period_locks p JOIN new_rows n
      ON n.client_id = p.client_id AND n.booked_on <= p.locked_through
    ORDER BY n.booked_on
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the books of client % are closed through %: % dated % cannot be posted',
            hit.client_id, hit.locked_through, TG_TABLE_NAME, hit.booked_on
            USING ERRCODE = 'check_violation',
                  HINT = 'post the correction dated after the closed period';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER journal_entries_locked_period AFTER INSERT ON journal_entries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_locked_period();
CREATE TRIGGER bank_transactions_locked_period AFTER INSERT ON bank_transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_locked_period();

-- Billing: the Stripe accounts a firm bills its clients through, a mirror of the Stripe
-- objects its events describe, and the events already applied.
--
-- A mirror row holds the newest snapshot seen of one object: its status, the rank of that
-- status (a status never moves back to a lower rank) and the event that carried it, so a
-- late or repeated event can be compared with what is stored. Ledger postings made from
-- these events are ordinary journal entries with source 'stripe' and a dedupe key derived
-- from the Stripe objects, so the partial unique index of 0001 keeps each one single.

ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_source_check;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_source_check
    CHECK (source IN ('bank_import', 'journal_import', 'manual', 'stripe')) NOT VALID;
ALTER TABLE journal_entries VALIDATE CONSTRAINT journal_entries_source_check;

-- A Stripe account belongs to one firm; its postings go to the firm's own books (a client
-- row with the billing chart of accounts).
CREATE TABLE stripe_accounts (
    stripe_account_id text PRIMARY KEY CHECK (stripe_account_id ~ '^acct_[A-Za-z0-9_]+$'),
    firm_id           uuid NOT NULL REFERENCES firms (id),
    books_client_id   uuid NOT NULL REFERENCES clients (id),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_accounts_firm_idx ON stripe_accounts (firm_id);

-- Every event applied (or recorded and ignored), once per account.
CREATE TABLE stripe_events (
    stripe_account_id text NOT NULL REFERENCES stripe_accounts (stripe_account_id),
    event_id          text NOT NULL,
    books_client_id   uuid NOT NULL REFERENCES clients (id),
    type              text NOT NULL,
    created           timestamptz NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('applied', 'ignored')),
    postings          integer NOT NULL DEFAULT 0,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stripe_account_id, event_id)
);

-- The columns every mirror table shares come first in each table below:
--   stripe_id      the Stripe object id
--   status         the object's status as Stripe names it
--   status_rank    its place in the object's life; higher ranks are never overwritten by lower
--   snapshot_at    the creation time of the event that carried this snapshot
--   snapshot_event that event's id (breaks ties between events of the same second)
--   data           the object as that event carried it

CREATE TABLE stripe_customers (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    -- The AdvisorOS client the customer's metadata names, only when it is a client of
    -- the same firm; link_problem says why a named client was not linked.
    client_id       uuid REFERENCES clients (id),
    link_problem    text,
    email           text,
    name            text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);
CREATE INDEX stripe_customers_client_idx ON stripe_customers (client_id) WHERE client_id IS NOT NULL;

CREATE TABLE stripe_subscriptions (
    books_client_id      uuid NOT NULL REFERENCES clients (id),
    stripe_id            text NOT NULL,
    status               text NOT NULL,
    status_rank          smallint NOT NULL,
    snapshot_at          timestamptz NOT NULL,
    snapshot_event       text NOT NULL,
    data                 jsonb NOT NULL,
    customer             text,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

CREATE TABLE stripe_invoices (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    customer        text,
    subscription    text,
    number          text,
    currency        char(3) NOT NULL,
    total_minor     bigint NOT NULL,
    tax_minor       bigint NOT NULL,
    amount_due_minor  bigint NOT NULL,
    amount_paid_minor bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

-- The lines of the invoice snapshot stored above; replaced with it.
CREATE TABLE stripe_invoice_lines (
    books_client_id uuid NOT NULL,
    invoice_id      text NOT NULL,
    line_id         text NOT NULL,
    position        integer NOT NULL,
    kind            text,
    description     text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    subscription    text,
    price           text,
    period_start    timestamptz,
    period_end      timestamptz,
    PRIMARY KEY (books_client_id, invoice_id, line_id),
    FOREIGN KEY (books_client_id, invoice_id)
        REFERENCES stripe_invoices (books_client_id, stripe_id) ON DELETE CASCADE
);

CREATE TABLE stripe_payment_intents (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    customer        text,
    invoice         text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    amount_received_minor bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

CREATE TABLE stripe_charges (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    customer        text,
    invoice         text,
    payment_intent  text,
    balance_transaction text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    amount_captured_minor bigint NOT NULL,
    amount_refunded_minor bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

CREATE TABLE stripe_refunds (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    charge          text,
    balance_transaction text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

CREATE TABLE stripe_disputes (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    charge          text,
    reason          text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

CREATE TABLE stripe_payouts (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    balance_transaction text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    arrival_date    date,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

-- Balance transactions, as far as events carry them expanded (fees come from here).
CREATE TABLE stripe_balance_transactions (
    books_client_id uuid NOT NULL REFERENCES clients (id),
    stripe_id       text NOT NULL,
    status          text NOT NULL,
    status_rank     smallint NOT NULL,
    snapshot_at     timestamptz NOT NULL,
    snapshot_event  text NOT NULL,
    data            jsonb NOT NULL,
    type            text,
    source          text,
    currency        char(3) NOT NULL,
    amount_minor    bigint NOT NULL,
    fee_minor       bigint NOT NULL,
    net_minor       bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (books_client_id, stripe_id)
);

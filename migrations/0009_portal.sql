-- The portal: the people who sign in, the role the portal API connects as, and a
-- row-level security policy on every client-owned table that exists before it.
--
-- Visibility follows the settings a request makes per transaction (see 0005):
-- app.firm_id, app.client_id, app.user_id. Nothing set means nothing visible.

-- Users: provisioned by SCIM from the firm's identity provider, or created locally.
-- A user with no role yet (provisioned, not assigned to a group) signs in to nothing.
CREATE TABLE users (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    firm_id      uuid NOT NULL REFERENCES firms (id),
    -- The sign-in name (UPN or e-mail) the identity provider puts in its tokens.
    user_name    text NOT NULL CHECK (btrim(user_name) <> '' AND length(user_name) <= 256),
    external_id  text,
    display_name text,
    email        text,
    role         text CHECK (role IN ('firm_admin', 'advisor', 'client_user')),
    client_id    uuid REFERENCES clients (id),
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'client_user') = (client_id IS NOT NULL))
);
CREATE UNIQUE INDEX users_user_name_idx ON users (lower(user_name));
CREATE INDEX users_firm_idx ON users (firm_id);

-- Groups as SCIM sends them; a group carries the role (and, for client users, the client)
-- its members get.
CREATE TABLE user_groups (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    firm_id      uuid NOT NULL REFERENCES firms (id),
    display_name text NOT NULL CHECK (btrim(display_name) <> ''),
    external_id  text,
    role         text CHECK (role IN ('firm_admin', 'advisor', 'client_user')),
    client_id    uuid REFERENCES clients (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'client_user') = (client_id IS NOT NULL)),
    UNIQUE (firm_id, display_name)
);

CREATE TABLE user_group_members (
    group_id uuid NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);

-- A bank transaction's category: the account its counterpart line sits on now. Null means
-- the account of the entry the import posted; a re-categorisation posts a
-- reclassification entry and records the new account here.
ALTER TABLE bank_transactions ADD COLUMN category_account_id bigint;

-- The ledger's own checks must see every row whoever writes, so they run as their owner;
-- a pinned search_path keeps a caller from substituting objects.
ALTER FUNCTION journal_queue_check() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION journal_check_balance() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION journal_check_range(bigint, bigint)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION bank_transactions_check_refs() SECURITY DEFINER SET search_path = public, pg_temp;
-- The chain must continue from the chain's true last row, not the last one visible.
ALTER FUNCTION audit_log_chain() SECURITY DEFINER SET search_path = public, pg_temp;
-- Closed periods bind every writer, though the API role may not read the locks.
ALTER FUNCTION refuse_locked_period() SECURITY DEFINER SET search_path = public, pg_temp;

-- The firm and client tables, by firm.
ALTER TABLE firms ENABLE ROW LEVEL SECURITY;
CREATE POLICY firms_firm ON firms
    USING (id = nullif(current_setting('app.firm_id', true), '')::uuid);

ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
CREATE POLICY clients_firm ON clients
    USING (firm_id = nullif(current_setting('app.firm_id', true), '')::uuid
           AND (nullif(current_setting('app.client_id', true), '') IS NULL
                OR id = nullif(current_setting('app.client_id', true), '')::uuid));

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_firm ON users
    USING (firm_id = nullif(current_setting('app.firm_id', true), '')::uuid);
ALTER TABLE user_groups ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_groups_firm ON user_groups
    USING (firm_id = nullif(current_setting('app.firm_id', true), '')::uuid);
ALTER TABLE user_group_members ENABLE ROW LEVEL SECURITY;
CREATE POLICY user_group_members_firm ON user_group_members
    USING (EXISTS (SELECT 1 FROM user_groups g WHERE g.id = group_id));

-- Client-owned tables of the ledger.
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY accounts_client ON accounts
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE ledger_imports ENABLE ROW LEVEL SECURITY;
CREATE POLICY ledger_imports_client ON ledger_imports
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE journal_entries ENABLE ROW LEVEL SECURITY;
CREATE POLICY journal_entries_client ON journal_entries
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE journal_lines ENABLE ROW LEVEL SECURITY;
CREATE POLICY journal_lines_client ON journal_lines
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE bank_transactions ENABLE ROW LEVEL SECURITY;
CREATE POLICY bank_transactions_client ON bank_transactions
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
-- Firm-wide rows (no client) are seen by no request; the ops tools read them.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_log_client ON audit_log
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- The billing mirror belongs to the firm's books client; a client sees the invoices,
-- payments and refunds of the Stripe customers linked to it.
ALTER TABLE stripe_accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_accounts_client ON stripe_accounts
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_events_client ON stripe_events
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_customers ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_customers_client ON stripe_customers
    USING (app_client_visible(books_client_id)
           OR (client_id IS NOT NULL AND app_client_visible(client_id)))
    WITH CHECK (app_client_visible(books_client_id));

CREATE FUNCTION app_customer_visible(books uuid, customer text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT app_client_visible(books)
        OR EXISTS (SELECT 1 FROM stripe_customers c
                   WHERE c.books_client_id = books AND c.stripe_id = customer
                     AND c.client_id IS NOT NULL AND app_client_visible(c.client_id))
$$;

ALTER TABLE stripe_invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_invoices_client ON stripe_invoices
    USING (app_customer_visible(books_client_id, customer))
    WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_invoice_lines ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_invoice_lines_client ON stripe_invoice_lines
    USING (EXISTS (SELECT 1 FROM stripe_invoices i
                   WHERE i.books_client_id = stripe_invoice_lines.books_client_id
                     AND i.stripe_id = stripe_invoice_lines.invoice_id))
    WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_payment_intents ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_payment_intents_client ON stripe_payment_intents
    USING (app_customer_visible(books_client_id, customer))
    WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_charges ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_charges_client ON stripe_charges
    USING (app_customer_visible(books_client_id, customer))
    WITH CHECK (app_client_visible(books_client_id));

ALTER TABLE stripe_subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_subscriptions_client ON stripe_subscriptions
    USING (app_customer_visible(books_client_id, customer))
    WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_refunds ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_refunds_client ON stripe_refunds
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_disputes ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_disputes_client ON stripe_disputes
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_payouts ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_payouts_client ON stripe_payouts
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));
ALTER TABLE stripe_balance_transactions ENABLE ROW LEVEL SECURITY;
CREATE POLICY stripe_balance_transactions_client ON stripe_balance_transactions
    USING (app_client_visible(books_client_id)) WITH CHECK (app_client_visible(books_client_id));

-- The role the portal API connects as: no superuser, no BYPASSRLS, owner of nothing, so
-- every policy above applies to it. Roles belong to the server, not the database, so a
-- second database on the same server finds it already there. Its password (or, in
-- Azure, its Entra identity) is set outside migrations.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'advisoros_api') THEN
        CREATE ROLE advisoros_api LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO advisoros_api', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO advisoros_api;
GRANT SELECT ON firms, users, user_groups, user_group_members, ledger_imports,
    stripe_accounts, stripe_customers, stripe_invoices, stripe_invoice_lines,
    stripe_payment_intents, stripe_charges, stripe_subscriptions, stripe_refunds,
    stripe_disputes, stripe_payouts, stripe_balance_transactions
    TO advisoros_api;
GRANT SELECT, INSERT ON clients, accounts, journal_entries, journal_lines, audit_log
    TO advisoros_api;
GRANT UPDATE (name, base_currency, archived_at) ON clients TO advisoros_api;
GRANT SELECT ON bank_transactions TO advisoros_api;
GRANT UPDATE (category_account_id) ON bank_transactions TO advisoros_api;
GRANT USAGE ON SEQUENCE accounts_id_seq, journal_entries_id_seq, journal_lines_id_seq,
    audit_log_id_seq TO advisoros_api;
GRANT EXECUTE ON FUNCTION app_client_visible(uuid), app_customer_visible(uuid, text),
    audit_log_verify(uuid) TO advisoros_api;

-- The same visibility rule as 0005, in a form the planner inlines into each policy: with
-- a client set (a client user, or staff once the request's client is checked against the
-- firm under the clients policy) it is one comparison per row instead of a function call;
-- the firm-wide branch keeps its lookup in a function of its own.
CREATE FUNCTION app_client_in_firm(client uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (
        SELECT 1 FROM clients c
        WHERE c.id = client
          AND c.firm_id = nullif(current_setting('app.firm_id', true), '')::uuid)
$$;
CREATE OR REPLACE FUNCTION app_client_visible(client uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN nullif(current_setting('app.client_id', true), '') IS NOT NULL
            THEN client = nullif(current_setting('app.client_id', true), '')::uuid
        ELSE app_client_in_firm(client)
    END
$$;
GRANT EXECUTE ON FUNCTION app_client_in_firm(uuid) TO advisoros_api;

-- The balances bank files state (OFX LEDGERBAL, a CSV's closing balance), one row per
-- account, currency and date per import, written in the import's own transaction. The
-- month-end close reconciles each bank account's books against the latest of them in the
-- period.
CREATE TABLE bank_statement_balances (
    id           bigserial PRIMARY KEY,
    client_id    uuid NOT NULL REFERENCES clients (id),
    account_id   bigint NOT NULL REFERENCES accounts (id),
    import_id    bigint NOT NULL REFERENCES ledger_imports (id),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount_minor bigint NOT NULL,
    as_of        date NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (import_id, account_id, currency, as_of)
);
CREATE INDEX bank_statement_balances_account_idx
    ON bank_statement_balances (account_id, currency, as_of DESC, id DESC);

ALTER TABLE bank_statement_balances ENABLE ROW LEVEL SECURITY;
CREATE POLICY bank_statement_balances_client ON bank_statement_balances
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
GRANT SELECT ON bank_statement_balances TO advisoros_api;

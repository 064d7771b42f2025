-- Firms, clients, the chart of accounts and the double-entry ledger.
--
-- Amounts are integer minor units with an ISO 4217 code; a line's sign is its side
-- (debit positive, credit negative). Entries and lines are append-only, and every entry
-- balances per currency when its transaction commits, whatever code wrote it.
--
-- The three high-volume tables (journal_entries, journal_lines, bank_transactions) take a
-- row per imported bank line, so their references are checked once per statement over
-- the whole set (see the triggers below) instead of by a foreign-key check per row, which
-- cost more than the inserts themselves. The rows they point at can never be deleted.

CREATE TABLE firms (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (btrim(name) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clients (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    firm_id         uuid NOT NULL REFERENCES firms (id),
    name            text NOT NULL CHECK (btrim(name) <> ''),
    base_currency   char(3) NOT NULL DEFAULT 'USD' CHECK (base_currency ~ '^[A-Z]{3}$'),
    mapping_profile jsonb NOT NULL DEFAULT '{}'::jsonb
                    CHECK (jsonb_typeof(mapping_profile) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    archived_at     timestamptz
);
CREATE INDEX clients_firm_idx ON clients (firm_id);

CREATE TABLE accounts (
    id           bigserial PRIMARY KEY,
    client_id    uuid NOT NULL REFERENCES clients (id),
    code         text NOT NULL CHECK (btrim(code) <> ''),
    name         text NOT NULL CHECK (btrim(name) <> ''),
    type         text NOT NULL
                 CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense')),
    -- A stable key for accounts the importer creates: a hash of the bank's account id,
    -- never the account number itself.
    external_ref text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, code),
    UNIQUE (client_id, external_ref)
);

CREATE TABLE ledger_imports (
    id              bigserial PRIMARY KEY,
    client_id       uuid REFERENCES clients (id),
    blob_name       text NOT NULL,
    blob_version    text NOT NULL,
    sha256          char(64) NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    format          text,
    status          text NOT NULL CHECK (status IN ('imported', 'rejected')),
    reason          text,
    rows_read       integer NOT NULL DEFAULT 0,
    imported        integer NOT NULL DEFAULT 0,
    duplicates      integer NOT NULL DEFAULT 0,
    error_count     integer NOT NULL DEFAULT 0,
    report_location text,
    report          jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (blob_name, blob_version)
);
CREATE INDEX ledger_imports_client_idx ON ledger_imports (client_id, id DESC);

CREATE TABLE journal_entries (
    id          bigserial PRIMARY KEY,
    client_id   uuid NOT NULL,
    booked_on   date NOT NULL,
    reference   text,
    memo        text NOT NULL DEFAULT '',
    source      text NOT NULL CHECK (source IN ('bank_import', 'journal_import', 'manual')),
    import_id   bigint,
    -- Set for entries whose repetition would double-count (journal-file entries).
    dedupe_key  text COLLATE "C",
    reverses_id bigint,
    created_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Partial: bank-import entries carry no key, and need no index entry.
CREATE UNIQUE INDEX journal_entries_dedupe_idx ON journal_entries (client_id, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX journal_entries_client_date_idx ON journal_entries (client_id, booked_on, id);

CREATE TABLE journal_lines (
    id           bigserial,
    entry_id     bigint NOT NULL,
    client_id    uuid NOT NULL,
    account_id   bigint NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor <> 0),
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    memo         text NOT NULL DEFAULT '',
    created_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- Lines are read by entry; keyed so, one index serves as key and entry lookup.
    PRIMARY KEY (entry_id, id)
);
CREATE INDEX journal_lines_account_idx ON journal_lines (account_id, entry_id);

CREATE TABLE bank_transactions (
    id           bigserial PRIMARY KEY,
    client_id    uuid NOT NULL,
    account_id   bigint NOT NULL,
    booked_on    date NOT NULL,
    amount_minor bigint NOT NULL,
    currency     char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description  text NOT NULL DEFAULT '',
    reference    text,
    fitid        text,
    -- 'fitid:<FITID>:<date>:<amount>' when the bank gives one, else 'row:<hash of the
    -- normalised date, amount, currency and description>:<occurrence within the file>'.
    -- Byte order: keys are compared, never shown sorted.
    dedupe_key   text COLLATE "C" NOT NULL,
    import_id    bigint NOT NULL,
    -- Null only for zero-amount rows, which post nothing.
    entry_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, dedupe_key)
);
CREATE INDEX bank_transactions_client_date_idx ON bank_transactions (client_id, booked_on);
CREATE INDEX bank_transactions_fitid_idx ON bank_transactions (account_id, fitid)
    WHERE fitid IS NOT NULL;

-- Append-only: the ledger is corrected by reversal, never by edit.
CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'post a reversal and a new entry instead';
END
$$;

-- Rows that ledger rows point at are archived, never deleted.
CREATE FUNCTION refuse_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted: the ledger refers to them', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation',
              HINT = 'archive the row instead';
END
$$;

CREATE TRIGGER firms_no_delete BEFORE DELETE ON firms
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER clients_no_delete BEFORE DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER ledger_imports_no_delete BEFORE DELETE ON ledger_imports
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER bank_transactions_no_delete BEFORE DELETE ON bank_transactions
    FOR EACH ROW EXECUTE FUNCTION refuse_delete();
CREATE TRIGGER firms_no_truncate BEFORE TRUNCATE ON firms
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER clients_no_truncate BEFORE TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER ledger_imports_no_truncate BEFORE TRUNCATE ON ledger_imports
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER bank_transactions_no_truncate BEFORE TRUNCATE ON bank_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE FUNCTION refuse_key_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the id of a % row cannot change: the ledger refers to it', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER clients_fixed_id BEFORE UPDATE OF id ON clients
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION refuse_key_change();
CREATE TRIGGER accounts_fixed_id BEFORE UPDATE OF id, client_id ON accounts
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.client_id IS DISTINCT FROM NEW.client_id)
    EXECUTE FUNCTION refuse_key_change();
CREATE TRIGGER ledger_imports_fixed_id BEFORE UPDATE OF id, client_id ON ledger_imports
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.client_id IS DISTINCT FROM NEW.client_id)
    EXECUTE FUNCTION refuse_key_change();

-- Bank transactions keep their identity: amount, date, account and dedupe key never change.
CREATE TRIGGER bank_transactions_fixed BEFORE UPDATE OF
    id, client_id, account_id, booked_on, amount_minor, currency, dedupe_key, import_id, entry_id
    ON bank_transactions
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

CREATE TRIGGER journal_entries_append_only
    BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_entries_no_truncate
    BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_lines_append_only
    BEFORE UPDATE OR DELETE ON journal_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER journal_lines_no_truncate
    BEFORE TRUNCATE ON journal_lines
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Balance at commit. A row-level deferred trigger per line would cost a call per line,
-- so each INSERT statement queues the range of entry ids it touched (one row per statement)
-- and one deferred constraint trigger checks the entries of this transaction in those
-- ranges when it commits. Ranges, not id lists: an import touches a million entries with
-- consecutive ids, and a range is one index scan.
CREATE TABLE journal_balance_checks (
    id       bigserial PRIMARY KEY,
    first_id bigint NOT NULL,
    last_id  bigint NOT NULL
);

CREATE FUNCTION journal_queue_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'journal_lines' THEN
        INSERT INTO journal_balance_checks (first_id, last_id)
        SELECT min(entry_id), max(entry_id) FROM new_rows HAVING count(*) > 0;
    ELSE
        INSERT INTO journal_balance_checks (first_id, last_id)
        SELECT min(id), max(id) FROM new_rows HAVING count(*) > 0;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER journal_lines_queue_check
    AFTER INSERT ON journal_lines REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_queue_check();
CREATE TRIGGER journal_entries_queue_check
    AFTER INSERT ON journal_entries REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION journal_queue_check();

-- Checks the entries written by this transaction with ids in [lo, hi].
CREATE FUNCTION journal_check_range(lo bigint, hi bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    me constant xid8 := pg_current_xact_id();
    bad record;
BEGIN
    -- Every line written now: its entry exists, was created now (lines are never added to
    -- a committed entry), and it and its account belong to the entry's client.
    SELECT l.entry_id, l.account_id, e.id AS found, e.created_xid = me AS fresh INTO bad
    FROM journal_lines l
    LEFT JOIN journal_entries e ON e.id = l.entry_id
    LEFT JOIN accounts a ON a.id = l.account_id
    WHERE l.entry_id BETWEEN lo AND hi AND l.created_xid = me
      AND (e.id IS NULL OR e.created_xid <> me OR l.client_id <> e.client_id
           OR a.id IS NULL OR a.client_id <> e.client_id)
    LIMIT 1;
    IF FOUND THEN
        IF bad.found IS NULL THEN
            RAISE EXCEPTION 'journal lines refer to entry %, which does not exist', bad.entry_id
                USING ERRCODE = 'foreign_key_violation';
        ELSIF NOT bad.fresh THEN
            RAISE EXCEPTION 'journal entry % is already committed; lines cannot be added to it',
                bad.entry_id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % has a line on account %, which is not an account of its client',
            bad.entry_id, bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- Every entry written now: what it names exists for its client, and it has lines.
    SELECT e.id, e.client_id, c.id AS client, e.import_id, i.id AS import_found,
           e.reverses_id, r.id AS reverses_found, r.client_id = e.client_id AS same_client
    INTO bad
    FROM journal_entries e
    LEFT JOIN clients c ON c.id = e.client_id
    LEFT JOIN ledger_imports i ON i.id = e.import_id
    LEFT JOIN journal_entries r ON r.id = e.reverses_id
    WHERE e.id BETWEEN lo AND hi AND e.created_xid = me
      AND (c.id IS NULL
           OR (e.import_id IS NOT NULL
               AND (i.id IS NULL OR i.client_id IS DISTINCT FROM e.client_id))
           OR (e.reverses_id IS NOT NULL AND (r.id IS NULL OR r.client_id <> e.client_id))
           OR NOT EXISTS (SELECT 1 FROM journal_lines l WHERE l.entry_id = e.id))
    LIMIT 1;
    IF FOUND THEN
        IF bad.client IS NULL THEN
            RAISE EXCEPTION 'journal entry % names client %, which does not exist',
                bad.id, bad.client_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.import_id IS NOT NULL AND bad.import_found IS NULL THEN
            RAISE EXCEPTION 'journal entry % names import %, which does not exist',
                bad.id, bad.import_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.import_id IS NOT NULL AND bad.import_found IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM ledger_imports i
                              WHERE i.id = bad.import_id AND i.client_id = bad.client_id) THEN
            RAISE EXCEPTION 'journal entry % names import % of another client',
                bad.id, bad.import_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.reverses_id IS NOT NULL AND NOT coalesce(bad.same_client, false) THEN
            RAISE EXCEPTION 'journal entry % reverses entry %, which is no entry of its client',
                bad.id, bad.reverses_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % has no lines; an entry needs at least two', bad.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;

    -- Every entry balances per currency. With no zero amounts and at least one line, an
    -- entry that balances has at least two lines.
    SELECT l.entry_id, l.currency, sum(l.amount_minor) AS total INTO bad
    FROM journal_lines l
    WHERE l.entry_id BETWEEN lo AND hi AND l.created_xid = me
    GROUP BY l.entry_id, l.currency
    HAVING sum(l.amount_minor) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % does not balance in %: debits and credits differ by % minor units',
            bad.entry_id, bad.currency, bad.total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
END
$$;

CREATE FUNCTION journal_check_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    span record;
BEGIN
    -- The first check to fire takes every queued range of this transaction, merged where
    -- they overlap or touch, so an entry touched by several statements is checked once;
    -- the checks that fire after it find nothing left.
    FOR span IN
        WITH taken AS (
            DELETE FROM journal_balance_checks RETURNING first_id, last_id
        ),
        ordered AS (
            SELECT first_id, last_id,
                   max(last_id) OVER (ORDER BY first_id, last_id
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                       AS reach
            FROM taken
        ),
        grouped AS (
            SELECT first_id, last_id,
                   count(*) FILTER (WHERE reach IS NULL OR first_id > reach + 1)
                       OVER (ORDER BY first_id, last_id) AS grp
            FROM ordered
        )
        SELECT min(first_id) AS lo, max(last_id) AS hi FROM grouped GROUP BY grp
    LOOP
        PERFORM journal_check_range(span.lo, span.hi);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER journal_balance_at_commit
    AFTER INSERT ON journal_balance_checks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION journal_check_balance();

-- Bank transactions: every row of a statement checked at its end, as one set.
CREATE FUNCTION bank_transactions_check_refs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id, n.account_id, n.import_id, n.entry_id,
           a.id IS NULL OR a.client_id <> n.client_id AS bad_account,
           i.id IS NULL OR i.client_id IS DISTINCT FROM n.client_id AS bad_import
    INTO bad
    FROM new_rows n
    LEFT JOIN accounts a ON a.id = n.account_id
    LEFT JOIN ledger_imports i ON i.id = n.import_id
    LEFT JOIN journal_entries e ON e.id = n.entry_id
    WHERE a.id IS NULL OR a.client_id <> n.client_id
       OR i.id IS NULL OR i.client_id IS DISTINCT FROM n.client_id
       OR (n.entry_id IS NOT NULL AND (e.id IS NULL OR e.client_id <> n.client_id))
    LIMIT 1;
    IF FOUND THEN
        IF bad.bad_account THEN
            RAISE EXCEPTION 'bank transaction % is on account %, which is not an account of its client',
                bad.id, bad.account_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.bad_import THEN
            RAISE EXCEPTION 'bank transaction % names import %, which is not an import of its client',
                bad.id, bad.import_id USING ERRCODE = 'foreign_key_violation';
        ELSE
            RAISE EXCEPTION 'bank transaction % names entry %, which is not an entry of its client',
                bad.id, bad.entry_id USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bank_transactions_check_refs
    AFTER INSERT ON bank_transactions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bank_transactions_check_refs();

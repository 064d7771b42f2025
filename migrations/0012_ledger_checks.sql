-- The ledger's commit-time and per-statement checks, rewritten so that their cost follows
-- the rows a transaction wrote, never the size of the ledger, and so that no plan can
-- probe a million rows one by one.
--
-- What they refuse is unchanged (see 0001): a line of an entry that does not exist, that
-- was committed before, or that sits on an account of another client; an entry of a
-- client or import that does not exist, or reversing no entry of its client; an entry
-- without lines; an entry that does not balance per currency; a bank transaction whose
-- account, import or entry is not its client's.
--
-- How: the lines of a range are summed once per entry, client and currency, and that one
-- ordered pass is joined to the entries of the range with a FULL JOIN, which Postgres runs
-- as a merge or hash join only; it finds missing, committed and foreign entries, entries
-- without lines and unbalanced entries together. Accounts, clients, imports and reversed
-- entries are looked up once per distinct value, through scalar subqueries that stay
-- index probes whatever the planner settings of the transaction are.

CREATE OR REPLACE FUNCTION journal_check_range(lo bigint, hi bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    me constant xid8 := pg_current_xact_id();
    worst record;
    bad record;
BEGIN
    -- One pass over the lines and entries of the range. Problems are rare, so ranking the
    -- few rows found costs nothing: problems of lines (rank 1) are reported before problems
    -- of entries (rank 2), and an unbalanced entry (rank 3) only when nothing else is wrong.
    SELECT coalesce(g.entry_id, e.id) AS entry_id, g.account_id, g.currency, g.total,
           e.id AS found, e.created_xid = me AS fresh,
           CASE WHEN g.entry_id IS NOT NULL
                     AND (e.id IS NULL OR e.created_xid <> me OR e.client_id <> g.client_id)
                    THEN 1
                WHEN g.entry_id IS NULL THEN 2
                ELSE 3
           END AS rank
    INTO worst
    FROM (
        SELECT l.entry_id, l.client_id, l.currency, sum(l.amount_minor) AS total,
               min(l.account_id) AS account_id
        FROM journal_lines l
        WHERE l.entry_id BETWEEN lo AND hi AND l.created_xid = me
        GROUP BY l.entry_id, l.client_id, l.currency
    ) g
    FULL JOIN (
        SELECT e.id, e.client_id, e.created_xid
        FROM journal_entries e
        WHERE e.id BETWEEN lo AND hi
    ) e ON e.id = g.entry_id
    WHERE (g.entry_id IS NOT NULL
           AND (e.id IS NULL OR e.created_xid <> me OR e.client_id <> g.client_id
                OR g.total <> 0))
       OR (g.entry_id IS NULL AND e.created_xid = me)
    ORDER BY rank, 1
    LIMIT 1;
    IF FOUND AND worst.rank = 1 THEN
        IF worst.found IS NULL THEN
            RAISE EXCEPTION 'journal lines refer to entry %, which does not exist', worst.entry_id
                USING ERRCODE = 'foreign_key_violation';
        ELSIF NOT worst.fresh THEN
            RAISE EXCEPTION 'journal entry % is already committed; lines cannot be added to it',
                worst.entry_id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % has a line on account %, which is not an account of its client',
            worst.entry_id, worst.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- Every line's account is an account of the line's client (which is now known to be its
    -- entry's client): one lookup per account and client the range uses.
    SELECT u.entry_id, u.account_id INTO bad
    FROM (
        SELECT l.account_id, l.client_id, min(l.entry_id) AS entry_id
        FROM journal_lines l
        WHERE l.entry_id BETWEEN lo AND hi AND l.created_xid = me
        GROUP BY l.account_id, l.client_id
    ) u
    WHERE (SELECT a.client_id FROM accounts a WHERE a.id = u.account_id)
          IS DISTINCT FROM u.client_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal entry % has a line on account %, which is not an account of its client',
            bad.entry_id, bad.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;

    -- What the entries name exists for their client: one lookup per client, import and
    -- reversed entry the range uses.
    SELECT v.id, v.client_id, v.import_id, v.reverses_id, v.client_found,
           v.import_client, v.import_found, v.reverses_client
    INTO bad
    FROM (
        SELECT u.*,
               EXISTS (SELECT 1 FROM clients c WHERE c.id = u.client_id) AS client_found,
               EXISTS (SELECT 1 FROM ledger_imports i WHERE i.id = u.import_id)
                   AS import_found,
               (SELECT i.client_id FROM ledger_imports i WHERE i.id = u.import_id)
                   AS import_client,
               (SELECT r.client_id FROM journal_entries r WHERE r.id = u.reverses_id)
                   AS reverses_client
        FROM (
            SELECT e.client_id, e.import_id, e.reverses_id, min(e.id) AS id
            FROM journal_entries e
            WHERE e.id BETWEEN lo AND hi AND e.created_xid = me
            GROUP BY e.client_id, e.import_id, e.reverses_id
        ) u
    ) v
    WHERE NOT v.client_found
       OR (v.import_id IS NOT NULL
           AND (NOT v.import_found OR v.import_client IS DISTINCT FROM v.client_id))
       OR (v.reverses_id IS NOT NULL AND v.reverses_client IS DISTINCT FROM v.client_id)
    ORDER BY v.id
    LIMIT 1;
    IF FOUND THEN
        IF NOT bad.client_found THEN
            RAISE EXCEPTION 'journal entry % names client %, which does not exist',
                bad.id, bad.client_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.import_id IS NOT NULL AND NOT bad.import_found THEN
            RAISE EXCEPTION 'journal entry % names import %, which does not exist',
                bad.id, bad.import_id USING ERRCODE = 'foreign_key_violation';
        ELSIF bad.import_id IS NOT NULL AND bad.import_client IS DISTINCT FROM bad.client_id THEN
            RAISE EXCEPTION 'journal entry % names import % of another client',
                bad.id, bad.import_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        RAISE EXCEPTION 'journal entry % reverses entry %, which is no entry of its client',
            bad.id, bad.reverses_id USING ERRCODE = 'foreign_key_violation';
    END IF;

    IF worst.rank IS NULL THEN
        RETURN;
    END IF;
    IF worst.rank = 2 THEN
        RAISE EXCEPTION 'journal entry % has no lines; an entry needs at least two', worst.entry_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    -- With no zero amounts and at least one line, an entry that balances has at least two.
    RAISE EXCEPTION 'journal entry % does not balance in %: debits and credits differ by % minor units',
        worst.entry_id, worst.currency, worst.total
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;

-- Bank transactions: every row of a statement checked at its end, as one set. One pass
-- groups the rows by client, account and import (a statement rarely has more than a few
-- groups), each group's account and import is looked up once, and the groups give the
-- range of entry ids the second pass joins against.
CREATE OR REPLACE FUNCTION bank_transactions_check_refs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    grp record;
    bad record;
    lo bigint;
    hi bigint;
BEGIN
    FOR grp IN
        SELECT n.client_id, n.account_id, n.import_id, min(n.id) AS id,
               min(n.entry_id) AS lo, max(n.entry_id) AS hi
        FROM new_rows n
        GROUP BY n.client_id, n.account_id, n.import_id
        ORDER BY 4
    LOOP
        IF (SELECT a.client_id FROM accounts a WHERE a.id = grp.account_id)
           IS DISTINCT FROM grp.client_id THEN
            RAISE EXCEPTION 'bank transaction % is on account %, which is not an account of its client',
                grp.id, grp.account_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF (SELECT i.client_id FROM ledger_imports i WHERE i.id = grp.import_id)
           IS DISTINCT FROM grp.client_id THEN
            RAISE EXCEPTION 'bank transaction % names import %, which is not an import of its client',
                grp.id, grp.import_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        lo := least(lo, grp.lo);
        hi := greatest(hi, grp.hi);
    END LOOP;
    IF lo IS NULL THEN
        RETURN NULL;
    END IF;

    SELECT n.id, n.entry_id INTO bad
    FROM new_rows n
    LEFT JOIN (
        SELECT e.id, e.client_id FROM journal_entries e WHERE e.id BETWEEN lo AND hi
    ) e ON e.id = n.entry_id
    WHERE n.entry_id IS NOT NULL AND (e.id IS NULL OR e.client_id <> n.client_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bank transaction % names entry %, which is not an entry of its client',
            bad.id, bad.entry_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

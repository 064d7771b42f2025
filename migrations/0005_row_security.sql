-- Row-level security, the shared part: who a transaction acts for, and which clients it
-- may see. A request sets these per transaction with set_config(..., true):
--   app.firm_id    the firm of the signed-in user (uuid)
--   app.client_id  the one client a client user belongs to; empty for firm staff
--   app.user_id    the user, for audit
-- Client-owned tables enable RLS with a policy on app_client_visible(client_id). The owner
-- role that migrations, imports and consumers use is not subject to RLS; the portal API
-- connects as a role without BYPASSRLS, so it sees only what these settings allow.
-- Nothing set means nothing visible.

CREATE FUNCTION app_client_visible(client uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN nullif(current_setting('app.client_id', true), '') IS NOT NULL
            THEN client = nullif(current_setting('app.client_id', true), '')::uuid
        ELSE EXISTS (
            SELECT 1 FROM clients c
            WHERE c.id = client
              AND c.firm_id = nullif(current_setting('app.firm_id', true), '')::uuid)
    END
$$;

-- Sources of journal entries that the capabilities after billing post, widened once here
-- so that their migrations do not each rewrite the list.
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_source_check;
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_source_check
    CHECK (source IN ('bank_import', 'journal_import', 'manual', 'stripe', 'quickbooks',
                      'adjustment', 'reclassification')) NOT VALID;
ALTER TABLE journal_entries VALIDATE CONSTRAINT journal_entries_source_check;

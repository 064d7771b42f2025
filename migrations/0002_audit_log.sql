-- The audit log: append-only, one hash chain per client (and one for firm-wide rows).
--
-- Each row's hash covers its content and the previous row's hash, so an edited or
-- deleted row breaks the chain at that point; audit_log_verify() finds the first break.

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    chain       uuid NOT NULL,
    seq         bigint NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    action      text NOT NULL,
    client_id   uuid REFERENCES clients (id),
    subject     text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    UNIQUE (chain, seq)
);

CREATE FUNCTION audit_log_row_hash(
    prev bytea, seq bigint, occurred_at timestamptz, actor text, action text,
    client_id uuid, subject text, details jsonb
) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(concat_ws(
        E'\x1f',
        seq::text,
        to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        actor, action, coalesce(client_id::text, ''), subject, details::text
    ), 'UTF8'))
$$;

CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last record;
BEGIN
    NEW.chain := coalesce(NEW.client_id, '00000000-0000-0000-0000-000000000000'::uuid);
    -- One writer per chain at a time, until commit, so seq and prev_hash cannot fork.
    PERFORM pg_advisory_xact_lock(hashtextextended('audit_log:' || NEW.chain::text, 0));
    SELECT a.seq, a.hash INTO last
    FROM audit_log a WHERE a.chain = NEW.chain ORDER BY a.seq DESC LIMIT 1;
    IF FOUND THEN
        NEW.seq := last.seq + 1;
        NEW.prev_hash := last.hash;
    ELSE
        NEW.seq := 1;
        NEW.prev_hash := '\x'::bytea;
    END IF;
    NEW.occurred_at := date_trunc('microseconds', NEW.occurred_at);
    NEW.hash := audit_log_row_hash(
        NEW.prev_hash, NEW.seq, NEW.occurred_at, NEW.actor, NEW.action,
        NEW.client_id, NEW.subject, NEW.details
    );
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_chain
    BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Walks every chain (or one client's) in order and returns each row whose content no
-- longer matches its hash, or whose link to the row before it is broken or missing.
-- No rows returned means the log is intact.
-- Limitation: rows removed from the very end of a chain leave no break behind; anchoring
-- each chain's latest hash outside the database would close that gap.
CREATE FUNCTION audit_log_verify(only_client uuid DEFAULT NULL)
RETURNS TABLE (id bigint, chain uuid, seq bigint, problem text)
LANGUAGE sql STABLE AS $$
    WITH ordered AS (
        SELECT a.*,
               lag(a.hash) OVER w AS expected_prev,
               lag(a.seq) OVER w AS prev_seq
        FROM audit_log a
        WHERE only_client IS NULL
           OR a.chain = coalesce(only_client, '00000000-0000-0000-0000-000000000000'::uuid)
        WINDOW w AS (PARTITION BY a.chain ORDER BY a.seq)
    )
    SELECT o.id, o.chain, o.seq,
           CASE
               WHEN o.seq <> coalesce(o.prev_seq, 0) + 1 THEN 'row(s) missing before this one'
               WHEN o.prev_hash <> coalesce(o.expected_prev, '\x'::bytea)
                   THEN 'link to the previous row is broken'
               ELSE 'content does not match its hash'
           END
    FROM ordered o
    WHERE o.seq <> coalesce(o.prev_seq, 0) + 1
       OR o.prev_hash <> coalesce(o.expected_prev, '\x'::bytea)
       OR o.hash <> audit_log_row_hash(
              o.prev_hash, o.seq, o.occurred_at, o.actor, o.action,
              o.client_id, o.subject, o.details)
    ORDER BY o.chain, o.seq
$$;

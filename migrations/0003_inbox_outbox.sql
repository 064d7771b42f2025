-- Webhook intake: every verified event recorded once in the inbox, and the messages that
-- must leave after a commit kept in the outbox until Service Bus has them.
--
-- The inbox is append-only, like the ledger: it is the record of what Stripe and
-- QuickBooks sent, kept byte for byte so that any event can be replayed. The outbox is a
-- work queue: the relay marks rows sent, counts attempts and pushes failed rows back.

CREATE TABLE inbox (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL CHECK (source IN ('stripe', 'quickbooks')),
    -- Stripe: the event id (evt_...). QuickBooks sends no id for a whole notification,
    -- so it is 'sha256:<hex of the raw body>', which a retried delivery repeats.
    event_id         text NOT NULL CHECK (btrim(event_id) <> ''),
    event_type       text NOT NULL,
    -- Stripe only: whether the event came from live mode. Null for QuickBooks.
    livemode         boolean,
    raw_body         bytea NOT NULL,
    -- Headers kept for audit: the signature as sent, never a secret.
    signature_header text NOT NULL,
    content_type     text,
    user_agent       text,
    request_id       text,
    traceparent      text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, event_id)
);
CREATE INDEX inbox_received_idx ON inbox (received_at, id);

CREATE TRIGGER inbox_append_only
    BEFORE UPDATE OR DELETE ON inbox
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER inbox_no_truncate
    BEFORE TRUNCATE ON inbox
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    queue           text NOT NULL CHECK (btrim(queue) <> ''),
    -- Service Bus duplicate detection keys on it; a replay gets ':replay:<n>' appended.
    message_id      text NOT NULL CHECK (btrim(message_id) <> '' AND length(message_id) <= 128),
    session_id      text,
    subject         text,
    content_type    text NOT NULL DEFAULT 'application/json',
    body            bytea NOT NULL,
    properties      jsonb NOT NULL DEFAULT '{}'::jsonb
                    CHECK (jsonb_typeof(properties) = 'object'),
    inbox_id        bigint REFERENCES inbox (id),
    -- 0 for the message of the original delivery, n for the n-th replay of its event.
    replay_no       integer NOT NULL DEFAULT 0 CHECK (replay_no >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (queue, message_id)
);
-- The relay's two questions: which unsent rows are due, and is there an older unsent row
-- in the same session (then the newer one waits, so each session leaves in order).
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE sent_at IS NULL;
CREATE INDEX outbox_session_idx ON outbox (queue, coalesce(session_id, ''), id)
    WHERE sent_at IS NULL;
CREATE INDEX outbox_inbox_idx ON outbox (inbox_id, replay_no);

-- What was sent stays: an outbox row is the proof of a hand-off, and the replay count
-- of an event is read from it. Only its delivery state (sent_at, attempts, last_error,
-- next_attempt_at) ever changes.
CREATE FUNCTION outbox_keep() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on outbox is not allowed: rows and their messages are kept; only the delivery state changes', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER outbox_no_delete
    BEFORE DELETE ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_keep();
CREATE TRIGGER outbox_no_truncate
    BEFORE TRUNCATE ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_keep();
CREATE TRIGGER outbox_fixed BEFORE UPDATE OF
    id, queue, message_id, session_id, subject, content_type, body, properties, inbox_id,
    replay_no, created_at
    ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_keep();

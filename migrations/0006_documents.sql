-- Client documents: every blob dropped in documents/<client id>/ is recorded once per blob
-- version in document_intake; the first arrival of a client's bytes becomes a document,
-- later arrivals of the same bytes link to it, bad files are recorded as quarantined.
--
-- Fields keep money as integer minor units with an ISO 4217 code. Sensitive values (tax
-- ids, account numbers) are stored only encrypted, beside their last four characters.

CREATE TABLE documents (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id          uuid NOT NULL REFERENCES clients (id),
    blob_name          text NOT NULL,
    sha256             char(64) NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes         bigint NOT NULL CHECK (size_bytes > 0),
    media_type         text NOT NULL
                       CHECK (media_type IN ('application/pdf', 'image/jpeg', 'image/png',
                                             'image/tiff')),
    page_count         integer NOT NULL CHECK (page_count > 0),
    doc_class          text NOT NULL
                       CHECK (doc_class IN ('w2', '1099-nec', '1099-int', '1099-div',
                                            '1099-misc', '1098', 'bank_statement',
                                            'credit_card_statement', 'invoice', 'receipt',
                                            'pay_stub', 'engagement_letter', 'other')),
    confidence         numeric(5, 4) NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    classifier         text NOT NULL CHECK (classifier IN ('local', 'docintel')),
    classifier_version text NOT NULL,
    model_id           text,
    status             text NOT NULL CHECK (status IN ('classified', 'needs_review', 'reviewed')),
    reviewed_by        text,
    reviewed_at        timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, sha256)
);
CREATE INDEX documents_review_idx ON documents (client_id, created_at)
    WHERE status = 'needs_review';

CREATE TABLE document_fields (
    document_id     uuid NOT NULL REFERENCES documents (id),
    client_id       uuid NOT NULL REFERENCES clients (id),
    name            text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    kind            text NOT NULL CHECK (kind IN ('text', 'date', 'money', 'sensitive')),
    value_text      text,
    amount_minor    bigint,
    currency        char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    value_encrypted bytea,
    last4           text,
    confidence      numeric(5, 4) NOT NULL CHECK (confidence BETWEEN 0 AND 1),
    page            integer CHECK (page > 0),
    source          text NOT NULL DEFAULT 'classifier' CHECK (source IN ('classifier', 'review')),
    PRIMARY KEY (document_id, name),
    CHECK (kind <> 'money' OR (amount_minor IS NOT NULL AND currency IS NOT NULL
                               AND value_text IS NULL)),
    CHECK (kind <> 'sensitive' OR (value_encrypted IS NOT NULL AND value_text IS NULL)),
    CHECK (kind NOT IN ('text', 'date') OR value_text IS NOT NULL)
);
CREATE INDEX document_fields_client_idx ON document_fields (client_id);

CREATE TABLE document_intake (
    id               bigserial PRIMARY KEY,
    -- NULL when the blob's folder names no client.
    client_id        uuid REFERENCES clients (id),
    blob_name        text NOT NULL,
    blob_version     text NOT NULL,
    sha256           char(64) NOT NULL,
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    media_type       text,
    page_count       integer,
    outcome          text NOT NULL CHECK (outcome IN ('new', 'duplicate', 'quarantined')),
    reason           text,
    document_id      uuid REFERENCES documents (id),
    quarantine_blob  text,
    received_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (blob_name, blob_version),
    CHECK ((outcome = 'quarantined') = (reason IS NOT NULL)),
    CHECK ((outcome = 'quarantined') = (document_id IS NULL))
);
CREATE INDEX document_intake_client_idx ON document_intake (client_id, id DESC);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY documents_client ON documents
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE document_fields ENABLE ROW LEVEL SECURITY;
CREATE POLICY document_fields_client ON document_fields
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));
ALTER TABLE document_intake ENABLE ROW LEVEL SECURITY;
CREATE POLICY document_intake_client ON document_intake
    USING (app_client_visible(client_id)) WITH CHECK (app_client_visible(client_id));

-- The portal's documents and engagements views run as the API role under row-level
-- security, like the ledger views. An advisor's review writes the document, its fields,
-- the audit row, the engagements it wakes and the outbox message in the request's own
-- transaction, so the role gets exactly the privileges those statements need.

GRANT SELECT ON documents, document_fields, engagements, engagement_documents
    TO advisoros_api;
GRANT UPDATE (doc_class, status, reviewed_by, reviewed_at, updated_at) ON documents
    TO advisoros_api;
GRANT INSERT, UPDATE, DELETE ON document_fields TO advisoros_api;
GRANT INSERT ON engagement_documents TO advisoros_api;
-- SELECT ... FOR UPDATE on the engagement serialises document notifications; it needs an
-- UPDATE privilege, given on a column the API never writes.
GRANT UPDATE (status) ON engagements TO advisoros_api;
GRANT SELECT, INSERT ON engagement_events TO advisoros_api;
GRANT USAGE ON SEQUENCE engagement_events_id_seq TO advisoros_api;
-- The outbox has no client column and no policy: the API may add messages and see the
-- keys its own insert compares (ON CONFLICT ... RETURNING), never a message's body.
GRANT INSERT ON outbox TO advisoros_api;
GRANT SELECT (id, queue, message_id) ON outbox TO advisoros_api;
GRANT USAGE ON SEQUENCE outbox_id_seq TO advisoros_api;

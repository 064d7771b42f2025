-- The portal starts engagements itself, as the API role under row-level security: the
-- engagement row and its audit entry are written in the request's transaction, so the
-- role may insert engagements (of the client the transaction names, by the policy).

GRANT INSERT ON engagements TO advisoros_api;

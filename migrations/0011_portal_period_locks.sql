-- A re-categorisation from the portal is dated in an open period: the API role reads its
-- own client's lock (row-level security shows it no other) to find the first open day.
GRANT SELECT ON period_locks TO advisoros_api;

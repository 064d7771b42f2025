-- The closed-period trigger on journal entries reads period_locks in the inserting
-- transaction, so the API role's reclassification entries need to see the client's lock
-- (row-level security still shows it only its own client's row). Without it every
-- portal re-categorisation failed with a permission error.
GRANT SELECT ON period_locks TO advisoros_api;

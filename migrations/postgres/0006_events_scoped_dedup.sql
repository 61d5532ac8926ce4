-- Event ids were unique on `account:id` alone, so one client's delivery
-- could stand in for another client's genuine event with the same id. Keys
-- are now `scope/account:id`, the scope being the client the delivery
-- belongs to: its per-client URL, else the client that verified it. An
-- unverified delivery to the shared URL belongs to no client yet: its scope
-- is empty until a verified delivery of the same event claims it.
UPDATE webhook_events
SET dedup_key = COALESCE(
        endpoint_client_id,
        CASE WHEN verification = 'verified' THEN client_id END,
        '') || '/' || dedup_key
WHERE dedup_key IS NOT NULL;

-- A tenant's own quotas and destination policy (`batchcalls keys policy`). NULL: the default
-- from settings (BATCHCALLS_TENANT_MAX_QUEUED_CALLS, BATCHCALLS_MAX_CALLS_PER_BATCH,
-- BATCHCALLS_ALLOWED_COUNTRIES, BATCHCALLS_BLOCKED_NUMBER_TYPES). An empty array is a value:
-- every country, or no number type blocked. Depends on 0001 only.
ALTER TABLE tenants
    ADD COLUMN max_queued_calls     integer CHECK (max_queued_calls >= 1),
    ADD COLUMN max_calls_per_batch  integer CHECK (max_calls_per_batch >= 1),
    ADD COLUMN allowed_countries    text[],
    ADD COLUMN blocked_number_types text[];

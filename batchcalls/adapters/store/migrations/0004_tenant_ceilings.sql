-- A tenant's ceilings under the provider's calls-per-second limit (`batchcalls keys policy`):
-- the most calls it may create per second, and the most calls it may have holding a slot across
-- its batches. NULL: no ceiling. Depends on 0003 only.
ALTER TABLE tenants
    ADD COLUMN max_calls_per_second numeric CHECK (max_calls_per_second > 0),
    ADD COLUMN max_concurrent_calls integer CHECK (max_concurrent_calls >= 1);

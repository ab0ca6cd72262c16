-- A batch's `expires_at`: after it no attempt of its calls is placed, and its waiting calls end
-- `expired`. NULL: the batch does not expire. The partial index serves the reconciler's look for
-- active batches that are due. Depends on 0001 only.
ALTER TABLE batches ADD COLUMN expires_at timestamptz;
CREATE INDEX batches_expiring ON batches (expires_at) WHERE expires_at IS NOT NULL AND finished_at IS NULL;

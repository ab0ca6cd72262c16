-- A batch's `start_at`: before it none of its calls is dialed (the batch is `scheduled`). NULL: it
-- starts when submitted. The partial index serves the reconciler's look for scheduled batches
-- that are due. Depends on 0001 only.
ALTER TABLE batches ADD COLUMN start_at timestamptz;
CREATE INDEX batches_starting ON batches (start_at) WHERE start_at IS NOT NULL AND started_at IS NULL;

-- A batch's events newest first (the dashboard's batch page) without a walk through every
-- batch's events. Depends on 0001 only.
CREATE INDEX events_batch_seq ON events (batch_id, seq);

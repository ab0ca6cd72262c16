-- Calling windows: a batch's `calling_window`, and a call's own when it overrides the batch's, in
-- the normal form of `window_spec.to_json` (a list of spans). NULL: no window. Depends on 0001 only.
ALTER TABLE batches ADD COLUMN calling_window jsonb;
ALTER TABLE calls ADD COLUMN calling_window jsonb;
-- A tenant's default window, for its batches that give none (`batchcalls keys policy`).
ALTER TABLE tenants ADD COLUMN calling_window jsonb;

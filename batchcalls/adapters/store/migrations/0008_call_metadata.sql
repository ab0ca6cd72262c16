-- A call's own data from the request: `metadata` (echoed in the call's views and events) and
-- `variables` (already filled into its stored `script` at submit; kept for the record and the
-- results). NULL: the call had none. Nullable columns without a default: adding them rewrites no
-- row. Depends on 0001 only.
ALTER TABLE calls ADD COLUMN metadata jsonb, ADD COLUMN variables jsonb;

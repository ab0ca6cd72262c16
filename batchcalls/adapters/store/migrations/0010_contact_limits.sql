-- Contact limits: a tenant's most dials to one number in any rolling 24 hours, across its batches
-- (`batchcalls keys policy --max-dials-per-number`; NULL: no limit), and the log of its dials
-- that the limit is counted on, written only for tenants with a limit. The reconciler deletes
-- rows older than a day. Depends on 0003 only.
ALTER TABLE tenants ADD COLUMN max_dials_per_number integer CHECK (max_dials_per_number >= 1);
CREATE TABLE contact_dials (
    tenant_id     bigint NOT NULL REFERENCES tenants(id),
    phone_number  text NOT NULL,
    dialed_at     timestamptz NOT NULL
);
CREATE INDEX contact_dials_number ON contact_dials (tenant_id, phone_number, dialed_at DESC);
CREATE INDEX contact_dials_age ON contact_dials (dialed_at);

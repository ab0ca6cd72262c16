-- A tenant's suppression list: numbers (E.164) its batches never dial. The primary key is the
-- lookup each dial makes (one index probe, however long the list). Depends on 0001 only.
CREATE TABLE suppressions (
    tenant_id    bigint NOT NULL REFERENCES tenants(id),
    phone_number text NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, phone_number)
);

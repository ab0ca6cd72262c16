-- API keys expire at the end of a rotation's overlap; last_used_at (to the minute) tells an
-- operator whether an old key is still in use before it is revoked.
ALTER TABLE api_keys
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

-- A rotated webhook secret keeps signing (beside tenants.webhook_secrets, the current ones)
-- until expires_at, so receivers can switch to the new secret within the overlap.
CREATE TABLE retiring_webhook_secrets (
    tenant_id   bigint NOT NULL REFERENCES tenants(id),
    secret      text NOT NULL,
    retired_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, secret)
);

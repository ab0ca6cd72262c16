CREATE TABLE tenants (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    webhook_secrets text[] NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants(id),
    key_hash    text NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE batches (
    id               text PRIMARY KEY,
    tenant_id        bigint NOT NULL REFERENCES tenants(id),
    status           text NOT NULL,
    concurrency      integer NOT NULL,
    priority         smallint NOT NULL,
    retry_config     jsonb NOT NULL,
    callback_url     text,
    metadata         jsonb,
    total_calls      integer NOT NULL,
    completed_calls  integer NOT NULL DEFAULT 0,
    failed_calls     integer NOT NULL DEFAULT 0,
    cancelled_calls  integer NOT NULL DEFAULT 0,
    idempotency_key  text,
    request_hash     text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at DESC, id DESC);
CREATE INDEX batches_active ON batches (status) WHERE status IN ('queued', 'running', 'paused');

CREATE TABLE calls (
    id               text PRIMARY KEY,
    batch_id         text NOT NULL REFERENCES batches(id),
    seq              integer NOT NULL,
    phone_number     text NOT NULL,
    priority         smallint NOT NULL,
    voice_id         text,
    script           jsonb NOT NULL,
    status           text NOT NULL,
    outcome          text,
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    responses        jsonb NOT NULL DEFAULT '[]',
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (batch_id, seq)
);
CREATE INDEX calls_batch_status ON calls (batch_id, status, seq);
CREATE INDEX calls_unfinished ON calls (status, batch_id)
    WHERE status IN ('scheduled', 'dialing', 'ringing', 'in_progress');

CREATE TABLE attempts (
    call_id           text NOT NULL REFERENCES calls(id),
    number            integer NOT NULL,
    status            text NOT NULL,
    outcome           text,
    provider          text NOT NULL,
    provider_call_id  text,
    error             text,
    dialed_at         timestamptz NOT NULL,
    answered_at       timestamptz,
    ended_at          timestamptz,
    last_event_at     timestamptz NOT NULL,
    PRIMARY KEY (call_id, number)
);
CREATE INDEX attempts_live ON attempts (last_event_at) WHERE status <> 'ended';

CREATE TABLE events (
    seq              bigserial PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    batch_id         text NOT NULL REFERENCES batches(id),
    type             text NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    given_up_at      timestamptz,
    delivery_attempts integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_error       text
);
CREATE INDEX events_undelivered ON events (batch_id, seq)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

use sea_orm_migration::prelude::*;

const UP: &str = r#"
CREATE TABLE channels (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    channel_id       text NOT NULL,
    provider         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'active', 'reauth_required', 'revoked')),
    generation       integer NOT NULL DEFAULT 1,
    requested_scopes jsonb NOT NULL DEFAULT '[]',
    granted_scopes   jsonb NOT NULL DEFAULT '[]',
    token_version    bigint NOT NULL DEFAULT 0,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    revoked_origin   text,
    UNIQUE (tenant_id, channel_id)
);

-- Deleting these rows is how a revocation destroys tokens while `channels` keeps the history.
CREATE TABLE channel_tokens (
    channel_pk    uuid NOT NULL REFERENCES channels (id),
    tenant_id     text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('access', 'refresh')),
    key_id        text NOT NULL,
    nonce         bytea NOT NULL,
    ciphertext    bytea NOT NULL,
    token_version bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_pk, kind)
);

-- Keyed by a hash of `state`: the state itself is never stored.
CREATE TABLE authorizations (
    state_hash          bytea PRIMARY KEY,
    tenant_id           text NOT NULL,
    channel_id          text NOT NULL,
    provider            text NOT NULL,
    redirect_uri        text NOT NULL,
    capabilities        jsonb NOT NULL,
    requested_scopes    jsonb NOT NULL,
    verifier_key_id     text,
    verifier_nonce      bytea,
    verifier_ciphertext bytea,
    expires_at          timestamptz NOT NULL,
    used_at             timestamptz,
    used_by_event       text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX authorizations_expiry ON authorizations (expires_at);

-- The idempotency record. `lease_until` keeps a second replica from re-running an event whose
-- first run is still talking to a platform.
CREATE TABLE inbox (
    tenant_id    text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    status       text NOT NULL CHECK (status IN ('processing', 'done')),
    lease_until  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (tenant_id, event_id)
);

CREATE TABLE outbox (
    id             uuid PRIMARY KEY,
    seq            bigserial NOT NULL,
    tenant_id      text NOT NULL,
    correlation_id text,
    routing_key    text NOT NULL,
    body           jsonb NOT NULL,
    reply_to       text,
    is_audit       boolean NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_by_correlation ON outbox (tenant_id, correlation_id);

-- Append-only and hash-chained per (tenant, channel); `channel_id` is '' for records that
-- belong to no channel (a rejected event).
CREATE TABLE audit_log (
    id             uuid PRIMARY KEY,
    tenant_id      text NOT NULL,
    channel_id     text NOT NULL,
    sequence       bigint NOT NULL,
    action         text NOT NULL,
    outcome        text NOT NULL,
    origin         text NOT NULL,
    correlation_id text,
    details        jsonb NOT NULL,
    prev_hash      bytea NOT NULL,
    hash           bytea NOT NULL,
    recorded_at    timestamptz NOT NULL,
    UNIQUE (tenant_id, channel_id, sequence)
);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS audit_log;
DROP FUNCTION IF EXISTS audit_log_is_append_only();
DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS inbox;
DROP TABLE IF EXISTS authorizations;
DROP TABLE IF EXISTS channel_tokens;
DROP TABLE IF EXISTS channels;
"#;

sql_migration!(UP, DOWN);

use sea_orm_migration::prelude::*;

const UP: &str = r#"
-- When the stored tokens last changed (exchange or refresh): a TokenExpiring that arrives just
-- after is answered from the current token, without a platform call.
ALTER TABLE channels ADD COLUMN tokens_updated_at timestamptz;

-- All work tied to a channel. Revocation and reauth cancel a channel's jobs here.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    tenant_id       text NOT NULL,
    channel_pk      uuid NOT NULL REFERENCES channels (id),
    channel_id      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('refresh', 'operation', 'platform_revocation')),
    status          text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    run_at          timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error_code text,
    cancel_reason   text,
    payload         jsonb NOT NULL DEFAULT '{}',
    -- A running job whose runner died is taken back once this passes.
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- At most one pending-or-running refresh per channel: storms collapse into it, and it is the
-- only token-endpoint call for the channel, across every replica.
CREATE UNIQUE INDEX jobs_one_refresh_per_channel ON jobs (channel_pk)
    WHERE kind = 'refresh' AND status IN ('pending', 'running');
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_by_channel ON jobs (tenant_id, channel_pk);

-- The events a job answers when it finishes: 50 TokenExpiring, one platform call, 50 answers.
CREATE TABLE job_waiters (
    job_id      uuid NOT NULL REFERENCES jobs (id),
    tenant_id   text NOT NULL,
    event_id    text NOT NULL,
    origin      text NOT NULL,
    reply_to    text,
    traceparent text NOT NULL,
    answered_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, tenant_id, event_id)
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS job_waiters;
DROP TABLE IF EXISTS jobs;
ALTER TABLE channels DROP COLUMN IF EXISTS tokens_updated_at;
"#;

sql_migration!(UP, DOWN);

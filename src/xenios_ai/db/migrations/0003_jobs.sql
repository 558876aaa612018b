-- Async jobs. The row is the truth; Redis only carries messages and progress events.
--
-- Every state change is a conditional UPDATE on (id, status[, attempts]): a redelivered message for a
-- finished job changes nothing, and only the attempt that claimed a job may finish it.
CREATE TABLE ai_backend.jobs (
    id uuid PRIMARY KEY,
    kind text NOT NULL,
    queue text NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    owner text NOT NULL,
    input jsonb NOT NULL DEFAULT '{}',
    upload jsonb,                         -- {key, filename, format, size, sha256} of an uploaded file
    result jsonb,
    error jsonb,                          -- {code, message}: the last error (a retried job keeps it)
    progress real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    progress_message text,
    attempts integer NOT NULL DEFAULT 0,  -- claims so far; the current attempt's number is its run token
    max_attempts integer NOT NULL DEFAULT 1,
    idempotency_key text,
    request_hash text,                    -- what the idempotency key was first used for
    webhook_url text,
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_delivered_at timestamptz,
    webhook_error text,
    source_job_id uuid,
    blobs text[] NOT NULL DEFAULT '{}',   -- storage keys owned by the job, removed with it
    message_id text,                      -- Redis id of the message last sent for the job
    worker_id text,
    cancel_requested_at timestamptz,
    run_after timestamptz,                -- a retry waits until then (sent by the sweep)
    created_at timestamptz NOT NULL DEFAULT now(),
    enqueued_at timestamptz,              -- NULL: no message in Redis yet (the sweep sends one)
    started_at timestamptz,
    heartbeat_at timestamptz,
    finished_at timestamptz
);

CREATE UNIQUE INDEX jobs_owner_idempotency_key ON ai_backend.jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_owner_created ON ai_backend.jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_running_heartbeat ON ai_backend.jobs (heartbeat_at) WHERE status = 'running';
CREATE INDEX jobs_queued_enqueued ON ai_backend.jobs (enqueued_at NULLS FIRST) WHERE status = 'queued';
CREATE INDEX jobs_finished ON ai_backend.jobs (finished_at) WHERE finished_at IS NOT NULL;

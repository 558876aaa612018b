-- One row per LLM request (API call or analysis job step): who, which task and model, outcome, usage, cost.
-- Written in batches by xenios_ai.llm.usage.UsageWriter; `id` is made by the writer, so a batch retried
-- after a lost acknowledgement does not insert twice. Prompt and answer text only with LLM_STORE_CONTENT.
CREATE TABLE ai_backend.llm_requests (
    id                uuid PRIMARY KEY,
    created_at        timestamptz NOT NULL,
    request_id        text,
    job_id            text,
    owner             text,
    task              text NOT NULL,
    mode              text NOT NULL CHECK (mode IN ('complete', 'stream')),
    status            text NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    error_code        text,
    model             text,
    provider          text,
    fallback_used     boolean NOT NULL DEFAULT false,
    attempts          jsonb NOT NULL DEFAULT '[]'::jsonb,
    prompt_tokens     integer,
    completion_tokens integer,
    cost_usd          numeric(14, 8),
    latency_ms        double precision NOT NULL,
    ttft_ms           double precision,
    finish_reason     text,
    prompt            jsonb,
    response          text
);

CREATE INDEX llm_requests_created_at ON ai_backend.llm_requests (created_at);
CREATE INDEX llm_requests_owner_created_at ON ai_backend.llm_requests (owner, created_at DESC);
CREATE INDEX llm_requests_request_id ON ai_backend.llm_requests (request_id);

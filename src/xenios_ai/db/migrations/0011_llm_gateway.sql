-- LLM gateway (issue 18): each request's OpenRouter generation id (its cost can be looked up later when a
-- cancelled stream never reported usage), the prompt tokens read from the provider's cache, and what was
-- charged to the owner's monthly budget.
ALTER TABLE ai_backend.llm_requests
    ADD COLUMN generation_id      text,
    ADD COLUMN cached_tokens      integer,
    ADD COLUMN budget_charged_usd numeric(14, 8);

-- Rows whose cost is still to be reconciled by generation id.
CREATE INDEX llm_requests_unpriced ON ai_backend.llm_requests (created_at)
    WHERE cost_usd IS NULL AND generation_id IS NOT NULL;

-- A webhook may carry the job's result (issue 20): the submit's webhook_include_result. Above
-- WEBHOOK_RESULT_MAX_BYTES the event carries a signed, short-lived URL of the result instead.
ALTER TABLE ai_backend.jobs ADD COLUMN webhook_include_result boolean NOT NULL DEFAULT false;

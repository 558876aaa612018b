-- Durable webhooks: the job row is the outbox of its webhook.
--
-- webhook_due_at: while a finished job's webhook still waits for delivery, the time from which the sweep
-- hands it to the queue (again); NULL once there is nothing to deliver (none asked for, delivered, or
-- given up). Every terminal transition sets it in the same statement that ends the job, a little ahead,
-- so the worker's own enqueue right after the commit normally delivers it first; the sweep only steps
-- in when that enqueue was lost (the worker died after the commit, Redis was down). A failed delivery
-- moves it to the time of the next try.
ALTER TABLE ai_backend.jobs ADD COLUMN webhook_due_at timestamptz;

CREATE INDEX jobs_webhook_due ON ai_backend.jobs (webhook_due_at) WHERE webhook_due_at IS NOT NULL;

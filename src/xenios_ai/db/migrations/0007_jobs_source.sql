-- Jobs from a reference instead of bytes: {"storage_key": "..."} (an object in the configured bucket) or
-- {"url": "https://..."} (fetched by the worker). NULL for jobs submitted with a file (upload) or none.
ALTER TABLE ai_backend.jobs ADD COLUMN source jsonb;

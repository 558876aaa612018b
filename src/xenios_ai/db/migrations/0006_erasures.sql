-- Erasure of a user's data (DELETE /api/v1/users/{id}/data, DELETE /api/v1/me/data).
--
-- erased_subjects: one row per user ever erased, keyed by sha256(user id), never the id itself. It holds
-- the random pseudonym their usage rows were moved to (billing totals survive, the person does not) and
-- the time of the latest erasure: a usage row of a request that started before it and is written after
-- it (a worker that was mid-job) is stored under the pseudonym and without text (llm.usage).
CREATE TABLE ai_backend.erased_subjects (
    subject_hash text PRIMARY KEY,        -- hex sha256 of the user id
    pseudonym    text NOT NULL UNIQUE,    -- 'erased-' || random hex: unrelated to the id
    erased_at    timestamptz NOT NULL     -- the latest erasure
);

-- The audit trail: one row per erasure call, what was erased as counts, never content.
CREATE TABLE ai_backend.erasures (
    id           uuid PRIMARY KEY,
    subject_hash text NOT NULL,
    requested_by text NOT NULL CHECK (requested_by IN ('service', 'user')),
    counts       jsonb NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX erasures_subject ON ai_backend.erasures (subject_hash, finished_at DESC);

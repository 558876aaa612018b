"""LLM orchestration: the task catalogue, the router (fallback, retries, deadlines, streaming), typed JSON
tasks and usage accounting. `router` documents the service API; the HTTP controllers are in
`xenios_ai.api.llm`.
"""

from xenios_ai.llm.router import LLMRouter
from xenios_ai.llm.typed_tasks import classify_intent, extract_entities
from xenios_ai.llm.types import Completion, Delta, Done, Options, StreamEvent, Usage
from xenios_ai.llm.usage import UsageRecord, UsageSink, UsageWriter
from xenios_ai.llm.wire import Message

__all__ = [
    "Completion",
    "Delta",
    "Done",
    "LLMRouter",
    "Message",
    "Options",
    "StreamEvent",
    "Usage",
    "UsageRecord",
    "UsageSink",
    "UsageWriter",
    "classify_intent",
    "extract_entities",
]

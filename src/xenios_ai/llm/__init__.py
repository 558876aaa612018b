"""LLM orchestration: the task catalogue (`tasks`), the router (`router`: fallback, retries, deadlines,
streaming) with its call record (`call`) and types (`types`), typed JSON tasks (`structured`,
`typed_tasks`) and usage accounting (`usage`). `router` documents the service API; the HTTP controllers
are in `xenios_ai.api.llm`.

The package imports nothing itself, so a module that only needs the task names (`tasks`) does not load
the openai client.
"""

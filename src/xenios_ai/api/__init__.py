"""The HTTP API: Litestar controllers, guards and problem details; logic lives in the services."""

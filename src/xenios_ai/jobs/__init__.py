"""Async jobs: the job rows in PostgreSQL, the Dramatiq broker and actors, and the job service."""

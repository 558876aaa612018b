"""Xenios AI backend."""

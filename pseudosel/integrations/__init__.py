"""Adapters that run pseudosel selectors inside other frameworks (imported on demand)."""

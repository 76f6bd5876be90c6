"""Benchmarks that measure the backup pipeline against the shell tools it replaces."""

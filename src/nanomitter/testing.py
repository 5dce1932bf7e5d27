"""Fixtures for users' tests (filled in below)."""

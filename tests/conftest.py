"""Shared fixtures: logs of every kind, backed by real SQLite files and a real PostgreSQL."""

from __future__ import annotations

pytest_plugins = ["tests.servers_postgres", "tests.servers_gcs"]
pytest_plugins += ["tests.servers_redis", "tests.servers_chroma"]

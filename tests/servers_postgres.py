"""PostgreSQL for the tests: a database of our own, created and dropped on the server at
``MEMSWARM_POSTGRES_URL`` (default: the local server), so no data we did not create is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty database; fails loudly when no PostgreSQL answers."""
    admin_url = sa.make_url(os.environ.get("MEMSWARM_POSTGRES_URL", DEFAULT_URL))
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"memswarm_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {admin_url!r} does not answer (set MEMSWARM_POSTGRES_URL): "
                    f"{exc.orig}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

"""PostgreSQL for the tests: a database of our own, created and dropped on the server at
``MEMSWARM_POSTGRES_URL`` (default: the local server), so no data we did not create is touched.
When nothing answers there and no URL was given, a throwaway cluster is started on a free
loopback port with the machine's ``initdb``/``pg_ctl``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _answers(url: sa.URL) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[sa.URL]:
    """The URL of a PostgreSQL server's maintenance database."""
    given = os.environ.get("MEMSWARM_POSTGRES_URL")
    url = sa.make_url(given or DEFAULT_URL)
    if given or _answers(url):
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    pg_ctl = bins[-1] if bins else shutil.which("pg_ctl")
    if not pg_ctl:
        pytest.fail(f"no PostgreSQL answers at {url} and no pg_ctl to start one; "
                    "install PostgreSQL or set MEMSWARM_POSTGRES_URL")
    data = tempfile.mkdtemp(prefix="memswarm-pg-")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    initdb = os.path.join(os.path.dirname(pg_ctl), "initdb")
    subprocess.run(_as_postgres([initdb, "-D", data, "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([pg_ctl, "-D", data, "-w", "-l", f"{data}/log", "start", "-o",
                                 f"-h 127.0.0.1 -p {port} -k {data}"]),
                   check=True, capture_output=True)
    try:
        yield sa.make_url(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", data, "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: sa.URL) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped at the end of the session."""
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    name = f"memswarm_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {postgres_server!r} does not answer: {exc.orig}")
    try:
        yield postgres_server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

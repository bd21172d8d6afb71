"""Fixtures for the deployment tests: a real PostgreSQL server (Debian's packages).

Without the server binaries the Postgres tests are skipped, unless ``MNEMO_REQUIRE_POSTGRES=1``
(CI), where a missing server fails them loudly.
"""

import itertools
import os

import pytest

from mnemo_assets_tests.deploy.postgres_server import PostgresServer, missing_reason

REQUIRE_POSTGRES = os.environ.get("MNEMO_REQUIRE_POSTGRES", "").strip().lower() in ("1", "true", "yes", "on")
_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server():
    reason = missing_reason()
    if reason:
        if REQUIRE_POSTGRES:
            pytest.fail(f"MNEMO_REQUIRE_POSTGRES is set but no PostgreSQL server can be started: {reason}", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg(postgres_server):
    """A fresh database and login role on the session's server."""
    return postgres_server.create_database(f"mnemo_{os.getpid()}_{next(_names)}")

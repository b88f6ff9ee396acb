"""A Telethon client logs in with SQLStore in one process; a new process resumes it.

The same scenario as for FileStore (tests/test_store_file.py), on SQLite, the local
PostgreSQL and the local MariaDB.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from resilient_tg.stores import SQLStore
from resilient_tg.testing import MTProtoTestServer

from .test_store_file import run_login_then_resume
from .test_store_sql import BACKENDS, drop_tables, server_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_new_process_resumes_an_sql_session_and_catches_up(
    mtproto_server: MTProtoTestServer, tmp_path: Path, backend: str
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob")
    url = server_url(backend, tmp_path)
    prefix = f"rtgp_{secrets.token_hex(3)}_"
    spec = {"kind": "sql", "url": url, "name": "bob", "table_prefix": prefix}
    try:
        await run_login_then_resume(mtproto_server, tmp_path, spec, alice.id, bob.id, bob.phone)
        async with SQLStore(url, name="bob", table_prefix=prefix) as store:
            data = await store.load()
        assert data is not None
        assert data.auth_key is not None
        assert data.update_state is not None
    finally:
        async with SQLStore(url, table_prefix=prefix) as cleanup:
            await drop_tables(cleanup)

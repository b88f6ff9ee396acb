"""A separate process that uses an SQLStore, for the cross-process tests in test_store_sql.py.

    python sql_lease_worker.py MODE URL TABLE_PREFIX NAME HOLDER TTL

Prints ``READY`` once set up, waits for a ``GO`` line on stdin (so that several
workers start together), then:

- ``lease``: acquires the lease and prints ``WON <token>`` or ``INUSE <holder>``; a
  winner keeps the lease until stdin closes (or it is killed), then releases it.
- ``schema``: first use of the store (creates the schema), prints ``OK``.

Anything else that goes wrong prints ``ERROR <type>: <message>`` and exits 1.
"""

from __future__ import annotations

import asyncio
import sys

from resilient_tg import SessionInUseError
from resilient_tg.stores import SQLStore


def say(line: str) -> None:
    print(line, flush=True)


async def main(mode: str, url: str, prefix: str, name: str, holder: str, ttl: float) -> int:
    store = SQLStore(url, name=name, table_prefix=prefix)
    try:
        if mode == "lease":
            await store.current_lease()  # connect and create the schema before the race
        say("READY")
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "GO":
            return 1
        if mode == "schema":
            await store.load()
            say("OK")
            return 0
        try:
            lease = await store.acquire_lease(holder, ttl)
        except SessionInUseError as exc:
            say(f"INUSE {exc.holder}")
            return 0
        say(f"WON {lease.token}")
        await asyncio.to_thread(sys.stdin.read)  # hold until the parent closes stdin
        await store.release_lease(holder)
    except Exception as exc:
        say(f"ERROR {type(exc).__name__}: {exc}")
        return 1
    else:
        return 0
    finally:
        await store.aclose()


if __name__ == "__main__":
    mode, url, prefix, name, holder, ttl = sys.argv[1:7]
    sys.exit(asyncio.run(main(mode, url, prefix, name, holder, float(ttl))))

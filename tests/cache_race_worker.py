"""A separate process that applies a shuffled cache update stream, for test_cache_race.py.

    python cache_race_worker.py KIND URL PREFIX ACCOUNT MODE SEED SHUFFLE_SEED

Connects (SQL: creates the tables), prints ``READY``, waits for a ``GO`` line on stdin
(so that the workers start together), then, by MODE:

- ``stream``: applies the stream of ``SEED`` (`make_stream`) shuffled with ``SHUFFLE_SEED``;
- ``put`` / ``delete``: puts (private-chat messages) or deletes by id alone the ids
  1..SEED, one call per id, so that a deletion meets the put of its id in flight;

and prints ``DONE <n>``.
Anything that goes wrong prints ``ERROR <type>: <message>`` and exits 1.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

from resilient_tg.cache import CacheBackend, Cursor, RedisCacheBackend, SQLCacheBackend
from resilient_tg.testing.cache_contract import CHANNEL, GROUP, USER, message

Op = tuple[Any, ...]


def make_stream(seed: int, messages: int = 40) -> list[Op]:
    """An update stream in pts order: messages new, edited, some deleted (by id alone in
    private chats and groups, by tombstone in the channel), cursor moves, read marks."""
    rng = random.Random(seed)
    chains: list[list[Op]] = []
    for n in range(messages):
        chat_id = (USER, GROUP, CHANNEL)[n % 3]
        message_id = n + 1  # private-chat and group ids share one sequence: distinct
        chain: list[Op] = [("new", chat_id, message_id, 0)]
        chain += [("edit", chat_id, message_id, 1000 * (e + 1)) for e in range(rng.randint(0, 2))]
        if rng.random() < 0.4:
            chain.append(("delete", chat_id, message_id, 0))
        chains.append(chain)
    slots = [i for i, chain in enumerate(chains) for _ in chain] + ["cursor"] * 10 + ["read"] * 10
    rng.shuffle(slots)
    stream: list[Op] = []
    for pts, slot in enumerate(slots, start=1):
        if slot == "cursor":
            stream.append(("cursor", Cursor(pts=pts, seq=pts // 3, channels={CHANNEL: pts})))
        elif slot == "read":
            stream.append(("read", (USER, GROUP, CHANNEL)[pts % 3], pts, pts // 2))
        else:
            kind, chat_id, message_id, edit_date = chains[int(slot)].pop(0)
            if kind == "delete" and chat_id != CHANNEL:
                stream.append(("delete", [message_id], pts))
            else:
                deleted = kind == "delete"
                m = message(chat_id, message_id, edit_date=edit_date, pts=pts, deleted=deleted)
                stream.append(("put", [m]))
    return stream


def open_backend(kind: str, url: str, prefix: str) -> CacheBackend:
    if kind == "redis":
        return RedisCacheBackend(url, prefix=prefix)
    return SQLCacheBackend(url, table_prefix=prefix, pool_size=1, max_overflow=0)


async def apply(backend: CacheBackend, account: str, ops: list[Op]) -> None:
    for op in ops:
        if op[0] == "put":
            await backend.put_messages(account, op[1])
        elif op[0] == "delete":
            await backend.delete_ids(account, op[1], op[2])
        elif op[0] == "cursor":
            await backend.set_cursor(account, op[1])
        else:
            await backend.mark_read(account, op[1], inbox_max_id=op[2], outbox_max_id=op[3])


async def main(
    kind: str, url: str, prefix: str, account: str, mode: str, seed: int, shuffle: int
) -> int:
    if mode == "stream":
        ops = make_stream(seed)
        random.Random(shuffle).shuffle(ops)
    elif mode == "put":
        ops = [("put", [message(USER, i, pts=i)]) for i in range(1, seed + 1)]
    else:
        ops = [("delete", [i], i) for i in range(1, seed + 1)]
    async with open_backend(kind, url, prefix) as backend:
        await backend.chats(account)  # connect (and create the tables) before the race
        print("READY", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "GO":
            return 1
        await apply(backend, account, ops)
    print(f"DONE {len(ops)}", flush=True)
    return 0


if __name__ == "__main__":
    kind, url, prefix, account, mode, seed, shuffle = sys.argv[1:8]
    try:
        sys.exit(asyncio.run(main(kind, url, prefix, account, mode, int(seed), int(shuffle))))
    except Exception as exc:
        print(f"ERROR {type(exc).__name__}: {exc}", flush=True)
        sys.exit(1)

"""A custom session store: sessions in Redis, with a lease that holds across machines.

    pip install 'resilient-tg[examples,testing]'
    python examples/custom_store_redis.py        # needs Redis on 127.0.0.1:6379

``RedisStore`` writes the three data methods of ``SessionStore`` and replaces the
process-local default lease with a real one: ``SET NX PX`` takes it, and Lua scripts
renew or release it only if it is still ours (compare-and-set, one atomic step). The
lease key expires on its own, so a holder that dies frees the session after ``ttl``.
``main()`` logs a raw Telethon client in to the local MTProtoTestServer through
``StoreSession``, throws the client away, and starts a new one from Redis alone.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import redis.asyncio as redis
from telethon import TelegramClient

from resilient_tg import LeaseLostError, SessionInUseError
from resilient_tg.stores import (  # encode/decode: the document every built-in store writes
    Lease,
    SessionData,
    SessionStore,
    StoreSession,
    decode,
    encode,
)

_RENEW = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2]) return tonumber(redis.call('GET', KEYS[2]) or '0')"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"


class RedisStore(SessionStore):
    """One session in Redis under ``resilient_tg:<name>`` (plus ``:lease`` and ``:token``)."""

    cross_process_lease = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", name: str = "default") -> None:
        self._redis = redis.Redis.from_url(url)  # connects lazily: no I/O here
        self._key = f"resilient_tg:{name}"
        self._lease, self._token = f"{self._key}:lease", f"{self._key}:token"
        kw = self._redis.connection_pool.connection_kwargs  # describe() shows no password
        self._where = f"redis://{kw.get('host')}:{kw.get('port')}/{kw.get('db')}#{name}"

    def describe(self) -> str:
        return self._where

    async def load(self) -> SessionData | None:
        raw = await self._redis.get(self._key)
        return None if raw is None else decode(raw, source=self._where)  # bad data: our error

    async def save(self, data: SessionData) -> None:
        await self._redis.set(self._key, encode(data))  # one SET: atomic

    async def delete(self) -> None:
        await self._redis.delete(self._key)

    async def acquire_lease(self, holder: str, ttl: float) -> Lease:
        if not holder or not ttl > 0:
            raise ValueError("lease holder must be non-empty and lease ttl > 0")
        if await self._redis.set(self._lease, holder, nx=True, px=max(1, int(ttl * 1000))):
            token = await self._redis.incr(self._token)  # a new holder gets a new token
            return Lease(holder=holder, expires_at=time.time() + ttl, token=token)
        try:
            return await self.renew_lease(holder, ttl)  # already ours: extend it
        except LeaseLostError:
            current, ms = await self._redis.get(self._lease), await self._redis.pttl(self._lease)
        if current is None:  # it expired just now: try again
            return await self.acquire_lease(holder, ttl)
        raise SessionInUseError(
            f"{self._where}: the session is leased to {current.decode()}",
            store=self._where,
            holder=current.decode(),
            expires_at=time.time() + max(ms, 0) / 1000,
        )

    async def renew_lease(self, holder: str, ttl: float) -> Lease:
        ms = max(1, int(ttl * 1000))
        token = await self._redis.eval(_RENEW, 2, self._lease, self._token, holder, ms)
        if token < 0:
            raise LeaseLostError(
                f"{self._where}: our lease is gone", store=self._where, holder=holder
            )
        return Lease(holder=holder, expires_at=time.time() + ttl, token=token)

    async def release_lease(self, holder: str) -> None:
        await self._redis.eval(_RELEASE, 1, self._lease, holder)

    async def current_lease(self) -> Lease | None:
        holder, ms = await self._redis.get(self._lease), await self._redis.pttl(self._lease)
        if holder is None or ms <= 0:
            return None
        token = int(await self._redis.get(self._token) or 0)
        return Lease(holder=holder.decode(), expires_at=time.time() + ms / 1000, token=token)

    async def aclose(self) -> None:
        await self._redis.aclose()


async def main() -> int:
    from resilient_tg.testing import MTProtoTestServer

    name = f"example-{os.getpid()}"
    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        for run in ("first start", "restart"):
            store = RedisStore(name=name)  # a new store object: nothing is kept in memory
            session = await StoreSession.open(store)
            if session.snapshot() is None:
                session.set_dc(server.dc_id, server.host, server.port)
            client = TelegramClient(session, server.api_id, server.api_hash)
            await client.connect()
            resumed = await client.is_user_authorized()
            if not resumed:
                await client.send_code_request(alice.phone)
                await client.sign_in(alice.phone, server.login_code(alice.phone))
            me = await client.get_me()
            how = "resumed from Redis without logging in" if resumed else "logged in with a code"
            print(f"{run}: {me.first_name} is authorized ({how})")
            await client.disconnect()
            await session.flush()  # durable in Redis now
            await session.aclose()
            if run == "restart":
                await store.delete()
            await store.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

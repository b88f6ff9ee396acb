"""FleetAdmin: what an operator (or a script) does to a fleet's database while the
workers run: list accounts and workers, add, import, park and remove accounts, change
their settings, and watch the balance.

It never runs an account: the workers do. Each write is one transaction, so a worker's
claim round sees an account either before or after the change, never half of it.
Removing an account deletes its session row and its lease row together; a worker still
running it is fenced off (its next save or lease renewal raises LeaseLostError).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .._errors import AccountExistsError, UnknownAccountError
from ..stores import SessionData, SessionStore, SQLStore, encode
from ..stores._encryption import Encryptor
from ..stores._sql import sealing_key, session_encryptor
from ..stores._sql_db import SQLDatabase
from ..stores._sql_url import check_name
from ._accounts import AccountSettings, AccountStatus, open_settings, seal_settings
from ._db import FleetDatabase, FleetView, fleet_database
from ._overview import AccountInfo, Balance, WorkerInfo, WorkerShare
from ._plan import fair_targets
from ._sources import read_source
from ._tables import MAX_REASON

if TYPE_CHECKING:
    from ..cache import CacheBackend

__all__ = [
    "DEFAULT_WORKER_TTL",
    "AccountExistsError",
    "AccountInfo",
    "Balance",
    "FleetAdmin",
    "UnknownAccountError",
    "WorkerInfo",
    "WorkerShare",
]

#: A worker whose heartbeat is older than this (seconds) is not counted as live.
DEFAULT_WORKER_TTL = 30.0

#: The lease holder of a removed account's tombstone (see `FleetAdmin.remove`).
REMOVED_HOLDER = "(removed)"


class FleetAdmin:
    """The fleet's database for operators: ``async with FleetAdmin(url) as admin``.

    ``url``, ``table_prefix`` and the encryption key are the workers' (the key seals
    imported sessions and per-account settings; without it they are stored in clear, and
    encrypted settings cannot be read). ``worker_ttl`` is how old a heartbeat may be for
    its worker to count as live: use the fleet's. Nothing connects until first use.
    """

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str | None = None,
        encryption_key: bytes | str | None = None,
        encryption_key_env: str | None = None,
        worker_ttl: float = DEFAULT_WORKER_TTL,
        retry: Sequence[float] = (0.2, 0.5, 1.0),
        timeout: float = 5.0,
    ) -> None:
        if not (math.isfinite(worker_ttl) and worker_ttl > 0):
            raise ValueError(f"worker_ttl must be > 0 seconds, got {worker_ttl!r}")
        self._store = SQLStore(
            url,
            table_prefix=table_prefix,
            encryption_key=encryption_key,
            encryption_key_env=encryption_key_env,
            retry=retry,
            timeout=timeout,
        )
        self._fleet: FleetDatabase = fleet_database(self._store)
        self._database: SQLDatabase = self._fleet.database
        self._key = sealing_key(self._store)
        self.worker_ttl = float(worker_ttl)
        self.table_prefix = self._store.table_prefix
        self._closed = False

    def __repr__(self) -> str:
        return f"<FleetAdmin {self.describe()} prefix={self.table_prefix!r}>"

    def describe(self) -> str:
        """The database URL without password or query: for messages."""
        return self._database.display

    @property
    def encrypted(self) -> bool:
        """Whether this admin has the fleet's encryption key."""
        return self._key is not None

    def store(self, name: str) -> SQLStore:
        """The SQLStore of account ``name`` (sharing this admin's pool), e.g. to log in."""
        self._check_open()
        return self._store.session(name)

    # Reading --------------------------------------------------------------------

    async def accounts(self) -> list[AccountInfo]:
        """Every account, sorted by name: those with a session (as the workers see them)
        and those whose login has not saved one yet."""
        view, bare = await self._view(with_bare_accounts=True)
        found = [
            AccountInfo(
                name=row.name,
                status=row.status,
                reason=row.reason,
                holder=row.holder,
                lease_left=max(0.0, row.lease_left) if row.holder else 0.0,
                in_handover=row.in_handover,
                has_session=True,
            )
            for row in view.accounts
        ]
        found.extend(bare)
        return sorted(found, key=lambda a: a.name)

    async def account(self, name: str) -> AccountInfo:
        """One account (UnknownAccountError if there is none of that name)."""
        check_name(name)
        for info in await self.accounts():
            if info.name == name:
                return info
        raise self._unknown(name)

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (heartbeat within ``worker_ttl``), sorted by id."""
        view, _ = await self._view(with_bare_accounts=False)
        return [
            WorkerInfo(
                worker_id=w.worker_id,
                host=w.host,
                pid=w.pid,
                running=w.running,
                capacity=w.capacity,
                draining=w.draining,
                heartbeat_age=max(0.0, w.heartbeat_age),
            )
            for w in sorted(view.workers, key=lambda w: w.worker_id)
        ]

    async def balance(self) -> Balance:
        """Each live worker's running count against its fair share (`fair_targets`, as
        the workers compute it). Read only: the workers rebalance by themselves."""
        view, _ = await self._view(with_bare_accounts=False)
        active = [a for a in view.accounts if a.status is AccountStatus.ACTIVE]
        loads = [w.load for w in view.workers]
        targets = fair_targets(len(active), loads)
        return Balance(
            workers=tuple(
                WorkerShare(w.worker_id, w.running, targets.get(w.worker_id, 0), w.draining)
                for w in sorted(view.workers, key=lambda w: w.worker_id)
            ),
            active=len(active),
            unclaimed=sum(1 for a in active if not a.holder),
            in_handover=sum(1 for a in active if a.in_handover),
        )

    async def settings(self, name: str) -> AccountSettings:
        """The account's own settings (empty ones when it has none). Encrypted settings
        need the fleet's key: SessionCorruptError says so."""
        check_name(name)
        accounts = self._fleet.tables.accounts
        sessions = self._fleet.tables.sessions

        async def op(conn: AsyncConnection) -> tuple[bool, bytes | None]:
            row = (
                await conn.execute(sa.select(accounts.c.settings).where(accounts.c.name == name))
            ).one_or_none()
            if row is not None:
                return True, None if row[0] is None else bytes(row[0])
            has_session = await conn.scalar(
                sa.select(sa.func.count()).select_from(sessions).where(sessions.c.name == name)
            )
            return bool(has_session), None

        exists, blob = await self._run("read an account's settings", op)
        if not exists:
            raise self._unknown(name)
        return open_settings(blob, self._settings_encryptor(name), source=self._source(name))

    # Writing --------------------------------------------------------------------

    async def add(
        self,
        name: str,
        session: SessionData | None,
        *,
        settings: AccountSettings = AccountSettings(),  # noqa: B008 - frozen, immutable
        status: AccountStatus = AccountStatus.ACTIVE,
        reason: str = "",
        replace: bool = False,
    ) -> None:
        """Add the account ``name`` with ``session`` (None: no session yet, e.g. before a
        login saves one), in one transaction. An existing account or session of that
        name is refused (AccountExistsError) unless ``replace``: then its session, its
        settings and its lease go, so a worker still running the old one is fenced."""
        check_name(name)
        if session is not None and not isinstance(session, SessionData):
            raise TypeError(f"session must be SessionData or None, not {type(session).__name__}")
        status = AccountStatus(status)
        blob = None if session is None else self._seal_session(name, session)
        sealed_settings = seal_settings(settings, self._settings_encryptor(name))
        t = self._fleet.tables

        async def op(conn: AsyncConnection) -> None:
            if await self._exists(conn, name):
                if not replace:
                    raise self._exists_error(name)
                await self._delete_rows(conn, name)
            now = await SQLDatabase.now(conn)
            await conn.execute(
                sa.insert(t.accounts).values(
                    name=name,
                    status=status.value,
                    reason=reason[:MAX_REASON],
                    settings=sealed_settings,
                    handover_at=None,
                    updated_at=now,
                )
            )
            if blob is not None:
                await conn.execute(
                    sa.insert(t.sessions).values(name=name, data=blob, updated_at=now)
                )

        await self._run("add an account", op, exists_as=name)

    async def import_session(
        self,
        name: str,
        source: SessionStore | str,
        *,
        settings: AccountSettings = AccountSettings(),  # noqa: B008 - frozen, immutable
        status: AccountStatus = AccountStatus.ACTIVE,
        replace: bool = False,
    ) -> SessionData:
        """Copy the logged-in session of ``source`` into the fleet as account ``name``.

        ``source`` is a store, or a string: a store URL (``file:///``, ``env://VAR``,
        ``sqlite://``, ``postgresql://...?name=N``), a file path (Telethon ``.session``
        or session JSON), or ``"session-string:"`` + a Telethon session string. The
        source is read under its lease and never changed; nothing is written unless it
        holds a logged-in session. Returns what was imported. Do not keep running the
        source elsewhere: Telegram revokes a key used in two places at once."""
        check_name(name)
        if not replace:
            # Checked again when writing; here so that a taken name is said first.
            taken = await self._run("look up an account", lambda c: self._exists(c, name))
            if taken:
                raise self._exists_error(name)
        data, _ = await read_source(source)
        await self.add(name, data, settings=settings, status=status, replace=replace)
        return data

    async def set_status(self, name: str, status: AccountStatus, reason: str = "") -> None:
        """Set the account's status: DISABLED parks it (its worker stops it), ACTIVE lets
        the workers claim it again (also after AUTH_LOST or REJECTED, once fixed)."""
        check_name(name)
        status = AccountStatus(status)
        accounts = self._fleet.tables.accounts

        async def op(conn: AsyncConnection) -> None:
            now = await SQLDatabase.now(conn)
            values = {
                "status": status.value,
                "reason": reason[:MAX_REASON],
                "handover_at": None,
                "updated_at": now,
            }
            changed = await conn.execute(
                sa.update(accounts).where(accounts.c.name == name).values(**values)
            )
            if changed.rowcount:
                return
            if not await self._exists(conn, name):
                raise self._unknown(name)
            # A session without an account row (imported by other means): give it one.
            await conn.execute(sa.insert(accounts).values(name=name, settings=None, **values))

        await self._run("set an account's status", op)

    async def set_settings(self, name: str, settings: AccountSettings) -> None:
        """Replace the account's own settings (sealed with the fleet's key if it has one);
        its worker uses them the next time it starts the account."""
        check_name(name)
        if not isinstance(settings, AccountSettings):
            raise TypeError(f"settings must be AccountSettings, not {type(settings).__name__}")
        blob = seal_settings(settings, self._settings_encryptor(name))
        accounts = self._fleet.tables.accounts

        async def op(conn: AsyncConnection) -> None:
            now = await SQLDatabase.now(conn)
            changed = await conn.execute(
                sa.update(accounts)
                .where(accounts.c.name == name)
                .values(settings=blob, updated_at=now)
            )
            if changed.rowcount:
                return
            if not await self._exists(conn, name):
                raise self._unknown(name)
            await conn.execute(
                sa.insert(accounts).values(
                    name=name,
                    status=AccountStatus.ACTIVE.value,
                    reason="",
                    settings=blob,
                    handover_at=None,
                    updated_at=now,
                )
            )

        await self._run("set an account's settings", op)

    async def remove(self, name: str, *, cache: CacheBackend | None = None) -> None:
        """Delete the account and its session in one transaction, and leave its lease to
        a tombstone holder for ``2 * worker_ttl``: a worker still running it is fenced
        (its next save or lease renewal is refused with LeaseLostError, and it cannot
        take the lease back), and the workers stop it. The name can be added again at
        once; it is claimed when the tombstone expires. UnknownAccountError if none.

        ``cache``: the fleet's message cache backend; the account's cached messages are
        purged once the rows are gone, so a removal purges even when no worker runs the
        account (a worker that does purges again after it stopped it). The backend is
        not closed."""
        check_name(name)

        async def op(conn: AsyncConnection) -> None:
            if not await self._exists(conn, name):
                raise self._unknown(name)
            await self._delete_rows(conn, name)

        await self._run("remove an account", op)
        if cache is not None:
            await cache.purge(name)

    # Lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Dispose the connection pool; the admin cannot be used afterwards."""
        self._closed = True
        await self._store.aclose()

    async def __aenter__(self) -> FleetAdmin:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Internals ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this FleetAdmin is closed; make a new one")

    async def _run(self, what: str, op: Any, *, exists_as: str | None = None) -> Any:
        self._check_open()
        try:
            return await self._database.run(what, op, display=self.describe())
        except sa.exc.IntegrityError:
            if exists_as is None:
                raise
            # Another writer added the same name between our check and our insert.
            raise AccountExistsError(
                f"{self._source(exists_as)}: the fleet already has an account "
                f"{exists_as!r} (added meanwhile)",
                name=exists_as,
            ) from None

    async def _view(self, *, with_bare_accounts: bool) -> tuple[FleetView, list[AccountInfo]]:
        """The workers' view of the fleet; with the accounts that have no session yet."""
        self._check_open()
        view = await self._fleet.view(self.worker_ttl)
        if not with_bare_accounts:
            return view, []
        t = self._fleet.tables

        async def op(conn: AsyncConnection) -> list[AccountInfo]:
            rows = await conn.execute(
                sa.select(t.accounts.c.name, t.accounts.c.status, t.accounts.c.reason).where(
                    ~sa.exists().where(t.sessions.c.name == t.accounts.c.name)
                )
            )
            return [
                AccountInfo(
                    name=str(r.name),
                    status=_status(r.status),
                    reason=str(r.reason or ""),
                    holder="",
                    lease_left=0.0,
                    in_handover=False,
                    has_session=False,
                )
                for r in rows
            ]

        seen = {a.name for a in view.accounts}
        bare = await self._run("read the fleet's accounts", op)
        return view, [a for a in bare if a.name not in seen]

    async def _exists(self, conn: AsyncConnection, name: str) -> bool:
        """Whether an account row or a session row of ``name`` exists (locked when so)."""
        t = self._fleet.tables
        for table in (t.accounts, t.sessions):
            row = (
                await conn.execute(
                    sa.select(table.c.name).where(table.c.name == name).with_for_update()
                )
            ).one_or_none()
            if row is not None:
                return True
        return False

    async def _delete_rows(self, conn: AsyncConnection, name: str) -> None:
        # The lease row is not deleted but taken by REMOVED_HOLDER until the tombstone
        # expires, with a new token: the worker still running the session is fenced
        # (its renewals and saves are refused) and cannot take the lease back, so it
        # can neither write the session back nor reconnect it; the fleet stops it. A
        # name added again is claimed once the tombstone expired.
        t = self._fleet.tables
        for table in (t.accounts, t.sessions):
            await conn.execute(sa.delete(table).where(table.c.name == name))
        now = await SQLDatabase.now(conn)
        await conn.execute(
            sa.update(t.leases)
            .where(t.leases.c.name == name)
            .values(
                holder=REMOVED_HOLDER,
                expires_at=now + 2 * self.worker_ttl,
                token=t.leases.c.token + 1,
            )
        )

    def _seal_session(self, name: str, data: SessionData) -> bytes:
        blob = encode(data)
        encryptor = session_encryptor(self._key, name)  # the key bound to the name
        return blob if encryptor is None else encryptor.seal(blob)

    def _settings_encryptor(self, name: str) -> Encryptor | None:
        if self._key is None:
            return None
        return Encryptor(self._key, context=f"resilient_tg.Fleet#{name}")

    def _source(self, name: str) -> str:
        return f"{self.describe()}#{name}"

    def _exists_error(self, name: str) -> AccountExistsError:
        return AccountExistsError(
            f"{self._source(name)}: the fleet already has an account {name!r}; remove it "
            "first, or replace it",
            name=name,
        )

    def _unknown(self, name: str) -> UnknownAccountError:
        return UnknownAccountError(
            f"{self._source(name)}: no account {name!r} in the fleet", name=name
        )


def _status(value: object) -> AccountStatus:
    try:
        return AccountStatus(str(value))
    except ValueError:
        return AccountStatus.DISABLED  # written by a newer version: shown as parked

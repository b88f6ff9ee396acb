"""The contract every `resilient_tg.stores.SessionStore` must keep, as a test suite.

Run it on your own store by subclassing `StoreContract` in a test module and
giving it a ``store`` fixture that yields an *empty* store (one per test)::

    # tests/test_my_store.py
    import pytest
    from resilient_tg.testing.store_contract import StoreContract

    from myapp.sessions import RedisStore


    @pytest.fixture
    def anyio_backend():
        return "asyncio"


    class TestRedisStore(StoreContract):
        @pytest.fixture
        async def store(self, redis_url):
            store = RedisStore(redis_url, name="contract-test")
            await store.delete()          # start empty
            yield store
            await store.aclose()

        @pytest.fixture
        def store_secrets(self):
            # Strings that must never show in repr(store) or describe(): passwords, keys.
            return ["hunter2"]

Requirements: ``pip install 'resilient-tg[testing]'`` brings what the suite imports
(pytest, hypothesis, and cryptography for `resilient_tg.testing`). The tests are async
and run under anyio's pytest plugin (anyio is a dependency of resilient_tg; its plugin
registers itself); give them an ``anyio_backend`` fixture returning ``"asyncio"``, as
above (Telethon runs on asyncio only). ``store`` is function-scoped; the hypothesis
test reuses one store for all its examples (each save replaces the last).

They cover: an empty store loads None; save→load keeps every field of any valid
`SessionData` (hypothesis, with `session_data`: 64-bit ids, any printable text in
names, host names or IP addresses); save replaces; delete empties and is a no-op on an
empty store; the lease (exclusion with `SessionInUseError` carrying ``holder`` and a
future ``expires_at``, renew, release, takeover after expiry, fencing tokens that grow
with each new holder, re-acquire by the same holder, `current_lease` None when free);
and that secrets stay out of reprs. Rules a store must keep that are easy to miss:

- ``acquire_lease("", ttl)`` raises ValueError whose message contains ``holder``, and
  ``acquire_lease(holder, ttl)`` with ``ttl <= 0`` raises ValueError whose message
  contains ``ttl`` (check both before any I/O).
- ``renew_lease`` without the lease (never taken, released, or taken over) raises
  `LeaseLostError`; ``release_lease`` of a lease you do not hold changes nothing.
- A lease of `StoreContract.lease_ttl` seconds (0.3) must expire on time; a store whose
  expiry is coarser (whole seconds) sets a larger ``lease_ttl`` on its subclass.
- ``repr()``, ``str()`` and ``describe()`` never show the auth key or anything the
  ``store_secrets`` fixture returns.

They run in one process; a store with a cross-process lease should also be tested with
real processes racing for it, as resilient_tg's own test suite does for FileStore.

`session_data` is the hypothesis strategy for `SessionData`; use it in
your own property tests too.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .._errors import LeaseLostError, SessionInUseError
from ..stores._base import SessionStore
from ..stores._data import AUTH_KEY_SIZE, Entity, SessionData, UpdateState

__all__ = ["StoreContract", "entities", "session_data", "update_states"]

_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_UINT31 = st.integers(min_value=0, max_value=2**31 - 1)
# Names as Telegram allows them: any printable text (no control characters).
_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=64)
_USERNAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{4,31}", fullmatch=True)
_PHONE = st.from_regex(r"[0-9]{5,15}", fullmatch=True)
_ADDRESS = st.one_of(
    st.ip_addresses().map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
)


def update_states() -> st.SearchStrategy[UpdateState]:
    """Any valid UpdateState, per-channel pts included."""
    return st.builds(
        UpdateState,
        pts=_UINT31,
        qts=_UINT31,
        date=_UINT31,
        seq=_UINT31,
        # Channel ids are positive (0 is the account's own entry in Telethon's table).
        channels=st.dictionaries(
            st.integers(min_value=1, max_value=2**63 - 1), _UINT31, max_size=8
        ),
    )


def entities() -> st.SearchStrategy[tuple[Entity, ...]]:
    """A cache of entities with distinct ids (as Telethon keeps them)."""
    entity = st.builds(
        Entity,
        id=_INT64,
        access_hash=_INT64,
        username=st.none() | _USERNAME,
        phone=st.none() | _PHONE,
        name=st.none() | _TEXT,
    )
    return st.lists(entity, max_size=12, unique_by=lambda e: e.id).map(tuple)


def session_data() -> st.SearchStrategy[SessionData]:
    """Any valid SessionData: every field, optional ones present or absent."""
    key = st.binary(min_size=AUTH_KEY_SIZE, max_size=AUTH_KEY_SIZE)
    # ever_authorized is about the auth key: it can be true only with one.
    key_and_flag = st.tuples(st.none(), st.just(False)) | st.tuples(key, st.booleans())
    return key_and_flag.flatmap(
        lambda pair: st.builds(
            SessionData,
            dc_id=st.integers(min_value=1, max_value=2**31 - 1),
            server_address=_ADDRESS,
            port=st.integers(min_value=1, max_value=65535),
            auth_key=st.just(pair[0]),
            takeout_id=st.none() | _INT64,
            update_state=st.none() | update_states(),
            entities=entities(),
            ever_authorized=st.just(pair[1]),
        )
    )


def _sample(n: int = 0) -> SessionData:
    key = bytes((i * 7 + n) % 256 for i in range(AUTH_KEY_SIZE))
    return SessionData(
        dc_id=2,
        server_address="149.154.167.51",
        port=443 + n,
        auth_key=key,
        takeout_id=None,
        update_state=UpdateState(pts=10 + n, qts=1, date=1_700_000_000, seq=3, channels={7: 5}),
        entities=(Entity(id=42, access_hash=-9, username="alice", phone="15550001", name="A"),),
    )


def _renderings(secret: bytes | str) -> list[str]:
    """The ways a secret could leak into text."""
    if isinstance(secret, str):
        return [secret]
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        repr(secret)[2:-1][:64],
    ]


_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    # One store per test serves every example (save replaces); a slow store is no error.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.anyio
class StoreContract:
    """Subclass with a ``store`` fixture yielding an empty store; see the module docs.

    ``lease_ttl`` is the short TTL used where a lease must expire during a test.
    """

    lease_ttl: float = 0.3

    @pytest.fixture
    def store(self) -> Any:
        """Override: yield an empty instance of the store under test."""
        raise NotImplementedError("StoreContract subclasses must define a 'store' fixture")

    @pytest.fixture
    def store_secrets(self) -> list[bytes | str]:
        """Override: secrets of the store (passwords, keys) that must never be shown."""
        return []

    # Data -----------------------------------------------------------------------------

    async def test_an_empty_store_loads_none(self, store: SessionStore) -> None:
        assert await store.load() is None

    @_SETTINGS
    @given(data=session_data())
    async def test_save_then_load_returns_every_field(
        self, store: SessionStore, data: SessionData
    ) -> None:
        await store.save(data)
        loaded = await store.load()
        assert loaded == data
        assert loaded is not None
        assert loaded.auth_key == data.auth_key
        assert loaded.update_state == data.update_state
        assert loaded.entities == data.entities

    async def test_save_replaces_the_previous_session(self, store: SessionStore) -> None:
        await store.save(_sample(1))
        await store.save(_sample(2))
        assert await store.load() == _sample(2)

    async def test_a_session_without_optional_fields_round_trips(self, store: SessionStore) -> None:
        minimal = SessionData(dc_id=2, server_address="127.0.0.1", port=443)
        await store.save(_sample(1))
        await store.save(minimal)
        assert await store.load() == minimal

    async def test_delete_empties_the_store(self, store: SessionStore) -> None:
        await store.save(_sample())
        await store.delete()
        assert await store.load() is None

    async def test_delete_on_an_empty_store_is_a_no_op(self, store: SessionStore) -> None:
        await store.delete()
        await store.delete()
        assert await store.load() is None

    async def test_a_store_can_be_saved_to_again_after_delete(self, store: SessionStore) -> None:
        await store.save(_sample(1))
        await store.delete()
        await store.save(_sample(2))
        assert await store.load() == _sample(2)

    # Lease ----------------------------------------------------------------------------

    async def test_a_second_holder_is_refused_while_the_lease_lives(
        self, store: SessionStore
    ) -> None:
        lease = await store.acquire_lease("holder-a", 30.0)
        try:
            assert lease.holder == "holder-a"
            assert lease.expires_at > time.time() + 20
            with pytest.raises(SessionInUseError) as info:
                await store.acquire_lease("holder-b", 30.0)
            assert info.value.holder == "holder-a"
            assert info.value.expires_at is not None
            assert info.value.expires_at > time.time()
        finally:
            await store.release_lease("holder-a")

    async def test_renew_extends_the_lease(self, store: SessionStore) -> None:
        first = await store.acquire_lease("holder-a", 5.0)
        try:
            renewed = await store.renew_lease("holder-a", 60.0)
            assert renewed.holder == "holder-a"
            assert renewed.expires_at > first.expires_at
            assert renewed.token == first.token
        finally:
            await store.release_lease("holder-a")

    async def test_release_frees_the_lease_for_another_holder(self, store: SessionStore) -> None:
        first = await store.acquire_lease("holder-a", 30.0)
        await store.release_lease("holder-a")
        second = await store.acquire_lease("holder-b", 30.0)
        try:
            assert second.holder == "holder-b"
            assert second.token > first.token
            with pytest.raises(LeaseLostError):
                await store.renew_lease("holder-a", 30.0)
        finally:
            await store.release_lease("holder-b")

    async def test_an_expired_lease_is_taken_over_and_its_renew_fails(
        self, store: SessionStore
    ) -> None:
        first = await store.acquire_lease("holder-a", self.lease_ttl)
        try:
            await anyio.sleep(max(0.0, first.expires_at - time.time()) + 0.05)
            second = await store.acquire_lease("holder-b", 30.0)
            assert second.holder == "holder-b"
            assert second.token > first.token
            with pytest.raises(LeaseLostError):
                await store.renew_lease("holder-a", 30.0)
            with pytest.raises(SessionInUseError):
                await store.acquire_lease("holder-a", 30.0)
        finally:
            await store.release_lease("holder-b")
            await store.release_lease("holder-a")

    async def test_the_same_holder_may_acquire_twice(self, store: SessionStore) -> None:
        first = await store.acquire_lease("holder-a", 30.0)
        try:
            again = await store.acquire_lease("holder-a", 30.0)
            assert again.holder == "holder-a"
            assert again.token >= first.token
            assert again.expires_at >= first.expires_at
        finally:
            await store.release_lease("holder-a")

    async def test_release_by_another_holder_changes_nothing(self, store: SessionStore) -> None:
        await store.acquire_lease("holder-a", 30.0)
        try:
            await store.release_lease("holder-b")
            with pytest.raises(SessionInUseError):
                await store.acquire_lease("holder-b", 30.0)
            await store.renew_lease("holder-a", 30.0)
        finally:
            await store.release_lease("holder-a")

    async def test_renew_without_a_lease_raises_lease_lost(self, store: SessionStore) -> None:
        with pytest.raises(LeaseLostError):
            await store.renew_lease("holder-a", 30.0)
        await store.release_lease("holder-a")  # releasing nothing is a no-op

    async def test_current_lease_shows_the_holder(self, store: SessionStore) -> None:
        assert await store.current_lease() is None
        await store.acquire_lease("holder-a", 30.0)
        try:
            current = await store.current_lease()
            assert current is not None
            assert current.holder == "holder-a"
        finally:
            await store.release_lease("holder-a")
        assert await store.current_lease() is None

    async def test_bad_lease_arguments_are_value_errors(self, store: SessionStore) -> None:
        with pytest.raises(ValueError, match="holder"):
            await store.acquire_lease("", 30.0)
        with pytest.raises(ValueError, match="ttl"):
            await store.acquire_lease("holder-a", 0)

    # Secrets --------------------------------------------------------------------------

    async def test_secrets_never_show_in_repr_or_describe(
        self, store: SessionStore, store_secrets: list[bytes | str]
    ) -> None:
        data = _sample()
        assert data.auth_key is not None
        await store.save(data)
        await store.load()
        shown = repr(store) + "\n" + store.describe() + "\n" + str(store)
        for secret in [data.auth_key, *store_secrets]:
            for text in _renderings(secret):
                assert text not in shown

    async def test_session_data_repr_hides_the_auth_key(self, store: SessionStore) -> None:
        await store.save(_sample())
        loaded = await store.load()
        assert loaded is not None
        assert loaded.auth_key is not None
        for text in _renderings(loaded.auth_key):
            assert text not in repr(loaded)
            assert text not in str(loaded)

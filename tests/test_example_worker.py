"""The RabbitMQ worker example, on the local RabbitMQ (never skipped: CI starts it)."""

from __future__ import annotations

import collections
import importlib.util
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import anyio
import pytest
from aio_pika.abc import AbstractIncomingMessage

from resilient_tg import ResilientClient
from resilient_tg.testing import FaultProxy, MTProtoTestServer

from .clienttools import FAST_KEEPALIVE, FAST_RECONNECT, seeded_store
from .conftest import STEP_TIMEOUT, wait_until

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "worker_rabbitmq.py"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_rabbitmq", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


class Broker:
    """A test-side RabbitMQ connection: unique queue names, consumed and counted."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        suffix = secrets.token_hex(6)
        self.queue = f"test.incoming.{suffix}"
        self.outbox = f"test.outgoing.{suffix}"
        self.received: list[AbstractIncomingMessage] = []

    async def consume_incoming(self) -> None:
        queue = await self.channel.declare_queue(self.queue, durable=True)

        async def collect(message: AbstractIncomingMessage) -> None:
            self.received.append(message)
            await message.ack()

        await queue.consume(collect)

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(json.loads(m.body)["text"] for m in self.received)

    async def waiting(self, name: str) -> int:
        queue = await self.channel.declare_queue(name, passive=True)
        count: int = queue.declaration_result.message_count
        return count


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(AMQP_URL, timeout=10)  # fails, never skips, if down
    try:
        channel = await connection.channel()
        broker = Broker(channel)
        yield broker
        for name in (broker.queue, broker.outbox):
            await channel.queue_delete(name)
    finally:
        await connection.close()


async def test_every_message_reaches_the_queue_once_across_a_reset_and_a_blackhole(
    mtproto_server: MTProtoTestServer, fault_proxy: FaultProxy, broker: Broker
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    bob = mtproto_server.create_user("+15550002", "Bob", username="bobby")
    client = ResilientClient(
        seeded_store(mtproto_server, fault_proxy.port, user=alice),
        mtproto_server.api_id,
        mtproto_server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
        sequential_updates=True,  # as the example runs it: published in order
    )
    worker = example.Worker(AMQP_URL, queue=broker.queue, outbox=broker.outbox)
    sent: list[str] = []

    async def send(label: str, n: int = 3) -> None:
        for i in range(n):
            text = f"{label} #{i}"
            await mtproto_server.send_message(bob.id, alice.id, text)
            sent.append(text)

    def all_queued() -> Callable[[], bool]:
        expected = list(sent)
        return lambda: all(broker.counts()[t] >= 1 for t in expected)

    async with worker, client:
        worker.attach(client)
        await broker.consume_incoming()
        await client.wait_connected(STEP_TIMEOUT)
        await wait_until(lambda: worker.consuming)

        await send("before")
        await wait_until(all_queued())

        fault_proxy.reset()
        await send("around the reset")
        await wait_until(all_queued())
        await wait_until(lambda: worker.consuming)  # back to CONNECTED: resumed

        # A black hole: the keepalive finds it, on_disconnected pauses the outbox.
        fault_proxy.blackhole()
        await wait_until(lambda: not worker.consuming)
        await send("into the black hole")
        command = {"peer": "bobby", "text": "sent once the link is back"}
        await broker.channel.default_exchange.publish(
            aio_pika.Message(json.dumps(command).encode()), routing_key=broker.outbox
        )
        assert await broker.waiting(broker.outbox) == 1  # paused: the command waits
        assert worker.sent == 0

        fault_proxy.heal()
        await wait_until(lambda: worker.consuming)
        await wait_until(all_queued())
        await wait_until(lambda: worker.sent == 1)
        assert await broker.waiting(broker.outbox) == 0

        # Updates are handled in order (sequential_updates): once the last one is
        # queued, a repeat of any earlier one would already be there.
        await send("last", 1)
        await wait_until(all_queued())

    # The worker's channel is closed: a command taken but never acked would be back.
    assert await broker.waiting(broker.outbox) == 0
    counts = broker.counts()
    assert set(counts) == set(sent)
    assert all(n == 1 for n in counts.values()), counts
    assert worker.published == len(sent)

    sends = [
        r for r in mtproto_server.requests_for("messages.sendMessage") if r.user_id == alice.id
    ]
    assert len(sends) == 1

    for message in broker.received:
        body = json.loads(message.body)
        key = example.message_key(bob.id, body["message_id"])
        assert message.message_id == key
        assert message.headers[example.ID_HEADER] == key
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert body["sender_id"] == bob.id


async def test_a_malformed_command_is_rejected_not_retried(
    mtproto_server: MTProtoTestServer, broker: Broker
) -> None:
    alice = mtproto_server.create_user("+15550001", "Alice")
    client = ResilientClient(
        seeded_store(mtproto_server, user=alice),
        mtproto_server.api_id,
        mtproto_server.api_hash,
        keepalive=FAST_KEEPALIVE,
        reconnect=FAST_RECONNECT,
        shutdown_timeout=5.0,
    )
    worker = example.Worker(AMQP_URL, queue=broker.queue, outbox=broker.outbox)
    async with worker, client:
        worker.attach(client)
        await wait_until(lambda: worker.consuming)
        await broker.channel.default_exchange.publish(
            aio_pika.Message(b"not json"), routing_key=broker.outbox
        )
        with anyio.fail_after(STEP_TIMEOUT):
            while await broker.waiting(broker.outbox) != 0:  # noqa: ASYNC110 - broker polling
                await anyio.sleep(0.02)
    # The worker's channel is closed: a command taken but not settled would be back.
    assert await broker.waiting(broker.outbox) == 0
    assert worker.sent == 0

"""A worker between Telegram and RabbitMQ that stops taking work while the link is down.

    pip install 'resilient-tg[examples]'
    python examples/worker_rabbitmq.py --store file:///var/lib/worker/session.json \
        --api-id 12345 --api-hash 0123abcd...  # or TG_STORE, TG_API_ID, TG_API_HASH, AMQP_URL
    python examples/worker_rabbitmq.py --test-server   # offline, needs RabbitMQ on localhost

Two queues, both durable:

- ``telegram.incoming`` (``--queue``): every incoming Telegram message is published
  here as JSON, persistent, with publisher confirms: the event handler returns only
  once RabbitMQ has confirmed the message, and retries (with backoff) until it does.
  The client runs with ``sequential_updates=True`` (a Telethon option), so updates are
  handled one after another: messages are published in order, and a broker outage
  holds the following updates back instead of piling up handler tasks.
- ``telegram.outgoing`` (``--outbox``): commands ``{"peer": ..., "text": ...}`` that
  the worker sends through Telegram.

Pause: the worker consumes ``telegram.outgoing`` only while the client is CONNECTED.
``on_disconnected`` cancels the consumer (``basic.cancel``), so commands wait in
RabbitMQ, where other workers or a later reconnect take them, instead of being taken
here and failing with ``NotConnectedError``; ``on_connected`` consumes again. A
command taken just before the link dropped is put back (``nack``, requeue). Publishing
to ``telegram.incoming`` needs no pause: while the link is down no update arrives, and
what was missed is fetched on reconnect, before ``on_connected``.

Idempotency: each published message carries the id ``"<chat_id>:<message_id>"`` (a
Telegram message id is unique within its chat) as the AMQP ``message_id`` and as the
``x-telegram-id`` header. Across a reconnect each message is published once; across a
crash or a lost publisher confirm it may be published again (at-least-once), so a
consumer drops ids it has already seen. Several accounts publishing into one queue
should prefix the id with the account.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from telethon import events

from resilient_tg import (
    ConnectionState,
    KeepalivePolicy,
    NotConnectedError,
    ResilientClient,
    ResultLostError,
    ResultUnknownError,
    StateChange,
)

log = logging.getLogger("worker")

ID_HEADER = "x-telegram-id"


def message_key(chat_id: int, message_id: int) -> str:
    """The idempotency key of one Telegram message: consumers drop repeats of it."""
    return f"{chat_id}:{message_id}"


class Worker:
    """Publishes incoming messages to ``queue``; sends ``outbox`` commands while connected.

    Enter it before the client, then ``attach(client)`` right after entering the
    client (before any await), so the first updates already find the handler. Give the
    client ``sequential_updates=True`` to publish in order, with backpressure.
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        queue: str = "telegram.incoming",
        outbox: str = "telegram.outgoing",
        prefetch: int = 8,
        publish_timeout: float = 10.0,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue_name = queue
        self.outbox_name = outbox
        self.prefetch = prefetch
        self.publish_timeout = publish_timeout
        self.published = 0  # confirmed by the broker
        self.sent = 0  # outbox commands sent through Telegram
        self._client: ResilientClient | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: Any = None
        self._outbox: Any = None
        self._consumer_tag: str | None = None
        self._accepting = False  # False from the moment a pause starts
        self._switch = asyncio.Lock()  # one pause/resume at a time
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def consuming(self) -> bool:
        """Whether the outbox is being consumed (False: paused)."""
        return self._consumer_tag is not None

    async def __aenter__(self) -> Worker:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        await self._channel.declare_queue(self.queue_name, durable=True)
        self._outbox = await self._channel.declare_queue(self.outbox_name, durable=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pause()
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None:
            await self._connection.close()

    def attach(self, client: ResilientClient) -> None:
        """Start publishing ``client``'s incoming messages and follow its link (no await)."""
        self._client = client
        client.telegram.add_event_handler(self._on_message, events.NewMessage(incoming=True))
        client.on_connected(self._follow_link)
        client.on_disconnected(self._follow_link)
        client.on_auth_lost(self._follow_link)
        # The link may have come up before the callbacks were registered.
        task = asyncio.ensure_future(self._follow_link(None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Telegram -> RabbitMQ -------------------------------------------------------------

    async def _on_message(self, event: Any) -> None:
        key = message_key(event.chat_id, event.id)
        body = {
            "id": key,
            "chat_id": event.chat_id,
            "message_id": event.id,
            "sender_id": event.sender_id,
            "text": event.raw_text,
            "date": event.date.isoformat() if event.date else None,
        }
        message = aio_pika.Message(
            json.dumps(body).encode(),
            message_id=key,
            headers={ID_HEADER: key},
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        delay = 0.1
        while True:
            try:
                # With publisher confirms this returns once the broker has the message.
                await self._channel.default_exchange.publish(
                    message, routing_key=self.queue_name, timeout=self.publish_timeout
                )
            except (aio_pika.exceptions.AMQPError, ConnectionError, asyncio.TimeoutError) as exc:
                log.warning("publishing %s failed (%r); retrying in %.1fs", key, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self.published += 1
                return

    # RabbitMQ -> Telegram: paused while the link is down --------------------------------

    async def _follow_link(self, change: StateChange | None) -> None:
        """Consume the outbox exactly while the client is CONNECTED."""
        assert self._client is not None
        if self._client.state is ConnectionState.CONNECTED:
            await self._resume()
        else:
            await self._pause()

    async def _resume(self) -> None:
        async with self._switch:
            if self._consumer_tag is None and self._outbox is not None:
                self._accepting = True
                self._consumer_tag = await self._outbox.consume(self._on_command)
                log.info("link up: consuming %s", self.outbox_name)

    async def _pause(self) -> None:
        async with self._switch:
            self._accepting = False
            if self._consumer_tag is not None:
                tag, self._consumer_tag = self._consumer_tag, None
                await self._outbox.cancel(tag)
                log.info("link down: paused %s (commands wait in RabbitMQ)", self.outbox_name)

    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        assert self._client is not None
        if not self._accepting:  # delivered before the cancel reached the broker
            await message.nack(requeue=True)
            return
        try:
            command = json.loads(message.body)
            peer, text = command["peer"], str(command["text"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed command %r", message.message_id)
            await message.reject(requeue=False)
            return
        try:
            await self._client.telegram.send_message(peer, text)
        except ResultLostError:
            pass  # it took effect; only its answer was lost in a reconnect
        except (NotConnectedError, ResultUnknownError):
            # Back to the queue; we are pausing. (ResultUnknownError: it was sent and may
            # have taken effect, so a redelivery may send it twice: at-least-once.)
            await message.nack(requeue=True)
            return
        except Exception:
            log.exception("command %r failed; rejecting it", message.message_id)
            await message.reject(requeue=False)
            return
        self.sent += 1
        await message.ack()


# Running it -------------------------------------------------------------------------


def status_file(args: argparse.Namespace) -> dict[str, Any]:
    """``status_file=`` for ResilientClient when asked for: a healthcheck reads it with
    ``resilient-tg status --file PATH`` without touching the session."""
    return {"status_file": args.status_file} if args.status_file else {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--store", default=env("TG_STORE"), help="session store URL [TG_STORE]")
    parser.add_argument("--api-id", type=int, default=env("TG_API_ID"), help="[TG_API_ID]")
    parser.add_argument("--api-hash", default=env("TG_API_HASH"), help="[TG_API_HASH]")
    parser.add_argument(
        "--status-file",
        default=env("TG_STATUS_FILE"),
        help="keep the health here for `resilient-tg status --file` [TG_STATUS_FILE]",
    )
    parser.add_argument(
        "--amqp-url",
        default=env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="[AMQP_URL]",
    )
    parser.add_argument("--queue", default="telegram.incoming")
    parser.add_argument("--outbox", default="telegram.outgoing")
    parser.add_argument(
        "--test-server", action="store_true", help="run against a local MTProtoTestServer"
    )
    args = parser.parse_args(argv)
    if not args.test_server and not (args.store and args.api_id and args.api_hash):
        parser.error(
            "--store, --api-id and --api-hash (or TG_*) are required without --test-server"
        )
    return args


async def run(worker: Worker, client: ResilientClient) -> None:
    async with worker, client:
        worker.attach(client)  # before the first await
        await client.run_until_signal()


async def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("telethon").setLevel(logging.WARNING)
    args = parse_args(argv)
    worker = Worker(args.amqp_url, queue=args.queue, outbox=args.outbox)
    if not args.test_server:
        client = ResilientClient(
            args.store, args.api_id, args.api_hash, sequential_updates=True, **status_file(args)
        )
        await run(worker, client)
        return 0

    from resilient_tg.stores import MemoryStore, SessionData
    from resilient_tg.testing import MTProtoTestServer

    async with MTProtoTestServer() as server:
        alice = server.create_user("+15550001", "Alice")
        bob = server.create_user("+15550002", "Bob", username="bobby")
        store = MemoryStore(
            SessionData(
                dc_id=server.dc_id,
                server_address=server.host,
                port=server.port,
                auth_key=server.issue_auth_key(alice.id),
            )
        )
        client = ResilientClient(
            store,
            server.api_id,
            server.api_hash,
            keepalive=KeepalivePolicy(interval=1, timeout=1),
            **status_file(args),
            sequential_updates=True,
        )

        async def chatter() -> None:
            for n in range(1, 1_000_000):
                await asyncio.sleep(5)
                await server.send_message(bob.id, alice.id, f"hello #{n} from Bob")

        print(f"Bob writes to Alice every 5 s; see the {args.queue!r} queue", flush=True)
        task = asyncio.create_task(chatter())
        try:
            await run(worker, client)
        finally:
            task.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

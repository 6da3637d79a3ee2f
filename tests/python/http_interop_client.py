"""academy-py 1.0's HTTP client against an exchange server (ours, in the Rust interop test).

Usage: python http_interop_client.py URL FIXTURES_DIR
Exits 0 when every check passes; prints what failed otherwise.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
import uuid

import aiohttp
from academy.agent import Agent, action
from academy.exception import BadEntityIdError, MailboxTerminatedError
from academy.exchange import HttpExchangeFactory
from academy.identifier import AgentId, UserId
from academy.manager import Manager
from academy.message import Message, PingRequest


class Calculator(Agent):
    """A small agent: discoverable, with one action."""

    @action
    async def add(self, a: int, b: int) -> int:
        return a + b


class ScientificCalculator(Calculator):
    """A subclass, for discover with allow_subclasses."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
    print(f'ok: {what}', flush=True)


def fixture_messages(root: pathlib.Path) -> list[tuple[str, Message]]:
    out = []
    for path in sorted((root / 'messages').rglob('*.json')):
        out.append((str(path.relative_to(root)), Message.model_validate_json(path.read_text())))
    return out


async def longpoll(url: str, mailbox: UserId | AgentId, timeout: float) -> tuple[int, dict | None]:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f'{url}/message',
            json={'mailbox': mailbox.model_dump_json(), 'timeout': timeout},
        ) as response:
            body = await response.json() if response.status == 200 else None
            return response.status, body


async def transport_checks(url: str, fixtures: pathlib.Path) -> None:
    factory = HttpExchangeFactory(url)
    alice = await factory._create_transport(name='alice')
    bob = await factory._create_transport(name='bob')
    try:
        registration = await alice.register_agent(ScientificCalculator, name='calc')
        agent_id = registration.agent_id
        # Discover: exact, through subclasses, Academy's base class.
        found = await alice.discover(ScientificCalculator, allow_subclasses=False)
        check(agent_id in found, 'discover finds the exact class')
        found = await alice.discover(Calculator, allow_subclasses=True)
        check(agent_id in found, 'discover with subclasses finds the subclass')
        found = await alice.discover(Calculator, allow_subclasses=False)
        check(agent_id not in found, 'discover without subclasses skips the subclass')
        found = await alice.discover('academy.agent.Agent', allow_subclasses=True)
        check(agent_id in found, 'discover of academy.agent.Agent finds every agent')

        # Every message kind from the fixtures, alice -> bob, received over SSE.
        sent = []
        for name, fixture in fixture_messages(fixtures):
            header = fixture.header.model_copy(update={'src': alice.mailbox_id, 'dest': bob.mailbox_id})
            message = fixture.model_copy(update={'header': header})
            await alice.send(message)
            sent.append((name, message))
        received = []
        # A transport of its own for the stream: closing it closes the stream's connection
        # (aiohttp keeps it open after the generator is closed, and the server would go on
        # taking messages for it).
        listener = await factory._create_transport(mailbox_id=bob.mailbox_id)
        stream = listener.listen(timeout=10)
        async for message in stream:
            received.append(message)
            if len(received) == len(sent):
                break
        await stream.aclose()
        await listener._session.close()
        await asyncio.sleep(0.3)
        check(len(received) == len(sent), f'{len(sent)} messages of every kind received over SSE')
        for (name, want), got in zip(sent, received):
            check(
                json.loads(want.model_dump_json()) == json.loads(got.model_dump_json()),
                f'{name} arrives equal',
            )

        # Long-poll receive (GET /message), FIFO.
        first = Message.model_validate_json((fixtures / 'messages/ping-request.json').read_text())
        tags = []
        for _ in range(3):
            tag = uuid.uuid4()
            header = first.header.model_copy(update={'src': alice.mailbox_id, 'dest': bob.mailbox_id, 'tag': tag})
            await alice.send(first.model_copy(update={'header': header}))
            tags.append(str(tag))
        got_tags = []
        for _ in range(3):
            status, body = await longpoll(url, bob.mailbox_id, 5)
            check(status == 200, f'long poll answers a message (status {status})')
            got_tags.append(json.loads(body['message'])['header']['tag'])
        check(got_tags == tags, 'long poll is FIFO')
        status, _ = await longpoll(url, bob.mailbox_id, 0.3)
        check(status == 408, 'long poll times out with 408')

        # Heartbeat and stats.
        await alice.update_heartbeat()
        age = await alice.heartbeat_status(alice.mailbox_id)
        check(age is not None and 0 <= age < 10, 'heartbeat is elapsed seconds')
        check(await bob.heartbeat_status(agent_id) is None, 'heartbeat never updated is null')
        stats = await alice.agent_stats(bob.mailbox_id)
        check(stats.queued == 0, 'stats are readable')

        # Unknown ids.
        try:
            await alice.send(Message.create(alice.mailbox_id, UserId.new(), PingRequest()))
            check(False, 'send to an unknown mailbox fails')
        except BadEntityIdError:
            check(True, 'send to an unknown mailbox raises BadEntityIdError')

        # Terminate: a pending request gets a code-0 answer; sends then fail.
        request = Message.create(alice.mailbox_id, agent_id, PingRequest())
        await alice.send(request)
        await alice.terminate(agent_id)
        notice = None
        listener = await factory._create_transport(mailbox_id=alice.mailbox_id)
        stream = listener.listen(timeout=10)
        async for message in stream:
            notice = message
            break
        await stream.aclose()
        await listener._session.close()
        check(notice is not None and notice.tag == request.tag, 'terminate answers the pending request')
        body = json.loads(notice.model_dump_json())['body']
        check(body['kind'] == 'academy-error-response' and body['error_code'] == 0, 'with error code 0')
        try:
            await alice.send(Message.create(alice.mailbox_id, agent_id, PingRequest()))
            check(False, 'send to a terminated mailbox fails')
        except MailboxTerminatedError:
            check(True, 'send to a terminated mailbox raises MailboxTerminatedError')
        found = await alice.discover(Calculator, allow_subclasses=True)
        check(agent_id not in found, 'discover skips terminated agents')
    finally:
        await alice.close()
        await bob.close()


async def manager_checks(url: str) -> None:
    factory = HttpExchangeFactory(url)
    async with await Manager.from_exchange_factory(factory) as manager:
        handle = await manager.launch(Calculator)
        result = await asyncio.wait_for(handle.add(2, 3), timeout=30)
        check(result == 5, 'a Manager-launched agent answers an action over our server')
        await handle.ping(timeout=30)
        check(True, 'ping')
        await manager.shutdown(handle, blocking=True)
        check(True, 'shutdown')


async def main() -> int:
    url, fixtures = sys.argv[1], pathlib.Path(sys.argv[2])
    await transport_checks(url, fixtures)
    await asyncio.wait_for(manager_checks(url), timeout=120)
    print('ALL OK', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))

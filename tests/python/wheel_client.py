"""academy-py 1.0's HTTP client against the exchange-server installed from the wheel.

Usage: python wheel_client.py URL   (run by scripts/test-wheel)
Registers an agent, sends it a message, receives it, and calls an action of a Manager-launched
agent. Exits 0 when every check passes; raises on the first that fails.
"""

from __future__ import annotations

import asyncio
import sys

from academy.agent import Agent, action
from academy.exchange import HttpExchangeFactory
from academy.manager import Manager
from academy.message import Message, PingRequest


class Adder(Agent):
    """One action, for the Manager check."""

    @action
    async def add(self, a: int, b: int) -> int:
        return a + b


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
    print(f'ok: {what}', flush=True)


async def transport_checks(url: str) -> None:
    factory = HttpExchangeFactory(url)
    user = await factory._create_transport(name='wheel-user')
    try:
        registration = await user.register_agent(Adder, name='adder')
        agent = await factory._create_transport(mailbox_id=registration.agent_id)
        try:
            sent = Message.create(user.mailbox_id, registration.agent_id, PingRequest())
            await user.send(sent)
            stream = agent.listen(timeout=30)
            received = await anext(stream)
            await stream.aclose()
            check(received.tag == sent.tag, 'the agent receives the message the user sent')
            check(received.src == user.mailbox_id, 'the message keeps its source')
            found = await user.discover(Adder)
            check(registration.agent_id in found, 'discover finds the registered agent')
        finally:
            await agent.close()
    finally:
        await user.close()


async def manager_checks(url: str) -> None:
    async with await Manager.from_exchange_factory(HttpExchangeFactory(url)) as manager:
        handle = await manager.launch(Adder)
        result = await asyncio.wait_for(handle.add(2, 3), timeout=30)
        check(result == 5, 'a Manager-launched agent answers an action')
        await manager.shutdown(handle, blocking=True)


async def main() -> int:
    url = sys.argv[1]
    await asyncio.wait_for(transport_checks(url), timeout=60)
    await asyncio.wait_for(manager_checks(url), timeout=120)
    print('ALL OK', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))

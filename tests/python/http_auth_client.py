"""academy-py 1.0's HTTP client with bearer tokens against our token-auth server.

Usage: python http_auth_client.py URL GROUP_UUID
Tokens expected on the server: tok-alice (alice, member of GROUP_UUID), tok-bob (bob, member
of GROUP_UUID), tok-carol (carol, no groups). Exits 0 when every check passes.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from academy.agent import Agent
from academy.exception import ForbiddenError, UnauthorizedError
from academy.exchange import HttpExchangeFactory
from academy.message import Message, PingRequest


class Private(Agent):
    """An agent whose mailbox alice owns."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
    print(f'ok: {what}', flush=True)


def factory(url: str, token: str | None) -> HttpExchangeFactory:
    headers = {'Authorization': f'Bearer {token}'} if token else {}
    # One retry after 0 s: 403 is retried once by academy-py (after refreshing headers).
    return HttpExchangeFactory(url, additional_headers=headers, initial_retry_backoff=0)


async def main() -> int:
    url, group = sys.argv[1], uuid.UUID(sys.argv[2])
    try:
        await factory(url, None)._create_transport(name='anonymous')
        check(False, 'no token is refused')
    except UnauthorizedError:
        check(True, 'no token: UnauthorizedError (401)')
    try:
        await factory(url, 'tok-nobody')._create_transport(name='nobody')
        check(False, 'an unknown token is refused')
    except ForbiddenError:
        check(True, 'unknown token: ForbiddenError (403)')

    alice = await factory(url, 'tok-alice')._create_transport(name='alice')
    bob = await factory(url, 'tok-bob')._create_transport(name='bob')
    carol = await factory(url, 'tok-carol')._create_transport(name='carol')
    try:
        agent_id = (await alice.register_agent(Private, name='private')).agent_id
        check(agent_id in await alice.discover(Private), 'the owner discovers its agent')
        check(agent_id not in await bob.discover(Private), 'discover skips what bob cannot access')
        try:
            await bob.send(Message.create(bob.mailbox_id, agent_id, PingRequest()))
            check(False, 'bob cannot send to alice\'s agent')
        except ForbiddenError:
            check(True, 'sending to another client\'s mailbox: ForbiddenError')

        console = await factory(url, 'tok-alice').console()
        try:
            await console.share_mailbox(agent_id, group)
            check(await console.get_shared_groups(agent_id) == [group], 'alice shares with her group')
            await bob.send(Message.create(bob.mailbox_id, agent_id, PingRequest()))
            check(True, 'bob, a member of the group, can send now')
            check(agent_id in await bob.discover(Private), 'and discovers the agent')
            try:
                await carol.send(Message.create(carol.mailbox_id, agent_id, PingRequest()))
                check(False, 'carol is not in the group')
            except ForbiddenError:
                check(True, 'carol, not in the group, still cannot')
            await console.remove_shared_group(agent_id, group)
            check(await console.get_shared_groups(agent_id) == [], 'alice stops sharing')
        finally:
            await console.close()
        bob_console = await factory(url, 'tok-bob').console()
        try:
            await bob_console.share_mailbox(agent_id, group)
            check(False, 'only the owner shares')
        except ForbiddenError:
            check(True, 'only the owner manages shares')
        finally:
            await bob_console.close()
        await alice.terminate(agent_id)
    finally:
        for transport in (alice, bob, carol):
            await transport.close()
    print('ALL OK', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(asyncio.run(main()))

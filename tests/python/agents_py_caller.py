"""An academy-py user calls a Rust agent with the json serializer and prints what it got.

Usage: agents_py_caller.py AGENT_UID (redis HOST PORT | http URL)
Prints one JSON object per check on stdout, then "done".
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from academy.exception import AcademyRemoteError
from academy.handle import Handle
from academy.identifier import AgentId
from academy.serialize import SerializationStrategy

from agents_common import factory_from_argv


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> None:
    agent_id: AgentId = AgentId(uid=uuid.UUID(sys.argv[1]))
    factory = factory_from_argv(sys.argv[2:])
    async with await factory.create_user_client(name='py-caller') as client:
        handle: Handle = Handle(agent_id, exchange=client, request_serializer=SerializationStrategy.JSON)
        await handle.ping(timeout=30)
        emit(check='ping', ok=True)
        emit(check='add', value=await handle.add(2, 40))
        emit(check='echo', value=await handle.echo({'text': 'h\u00e9llo', 'n': [1, 2.5, None]}))
        emit(check='scale', value=await handle.scale(2.0, factor=1.5))
        emit(check='whoami', value=await handle.whoami(), me=str(client.client_id.uid))
        results = await asyncio.gather(*(handle.add(i, i) for i in range(64)))
        emit(check='concurrent', value=results)
        try:
            await handle.fail('ValueError: bad value')
        except AcademyRemoteError as e:
            emit(check='fail', error=type(e).__name__, text=str(e))
        try:
            await handle.no_such_action()
        except AcademyRemoteError as e:
            emit(check='unknown', error=type(e).__name__, text=str(e))
        discovered = await client.discover('tests.agents.Calculator')
        emit(check='discover', value=[str(a.uid) for a in discovered])
        await handle.shutdown()
        emit(check='shutdown', ok=True)
    print('done', flush=True)


if __name__ == '__main__':
    asyncio.run(main())

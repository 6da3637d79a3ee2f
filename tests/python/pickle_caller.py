"""An academy-py user with Academy's default settings (no serializer set anywhere: pickle)
calls the Rust calculator agent and prints what it got.

Usage: pickle_caller.py AGENT_ID_JSON (redis HOST PORT | http URL)
AGENT_ID_JSON is the agent's id line as the calculator example prints it. Prints one JSON
object per check on stdout, then "done".
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from academy.handle import Handle
from academy.identifier import AgentId

from agents_common import factory_from_argv

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    2**63 - 1,
    -(2**63),
    2**64,
    2**100 + 1,
    -(2**200),
    2.5,
    float('inf'),
    '',
    'h\u00e9llo \U0001f600\n',
    b'',
    b'\x00\xffbytes',
    bytearray(b'ba'),
    [],
    [1, 'a', None],
    (),
    (1,),
    (1, 'a', (2.5, b'x')),
    {},
    {'k': [1, {'n': None}], 3: (1,), (1, 2): frozenset({1})},
    set(),
    {1, 2, 'x'},
    frozenset({'a'}),
    {'nested': [{1}, (frozenset(),), bytearray()]},
]


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same Python types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset)):
        return {(type(x), x) for x in a} == {(type(x), x) for x in b}
    return a == b


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main() -> None:
    agent_id: AgentId = AgentId.model_validate_json(sys.argv[1])
    factory = factory_from_argv(sys.argv[2:])
    async with await factory.create_user_client(name='py-pickle-caller') as client:
        handle: Handle = Handle(agent_id, exchange=client)
        await handle.ping(timeout=30)
        emit(check='add', value=await handle.add(2, 40))
        for value in VALUES:
            back = await handle.echo(value)
            emit(check='echo', sent=repr(value), got=repr(back), same=same(value, back))
        try:
            await handle.fail('boom')
        except Exception as e:
            emit(check='fail', error=type(e).__name__, text=str(e))
        try:
            await handle.add('x', 1)
        except TypeError as e:
            emit(check='bad_args', error=type(e).__name__, text=str(e))
        discovered = await client.discover('examples.Calculator')
        emit(check='discover', value=[a.model_dump_json() for a in discovered])
    print('done', flush=True)


if __name__ == '__main__':
    asyncio.run(main())

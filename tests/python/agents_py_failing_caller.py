"""An academy-py user calls a Rust agent whose startup fails (Academy issue #288): the call
waiting for the startup must fail with the startup's reason, not at its timeout; once the
agent's mailbox is terminated, a new call must fail at once.

Usage: agents_py_failing_caller.py AGENT_UID (redis HOST PORT | http URL)
Prints one JSON object per check on stdout, then "done".
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from academy.exchange.mailbox_status import MailboxStatus
from academy.handle import Handle
from academy.identifier import AgentId
from academy.serialize import SerializationStrategy

from agents_common import factory_from_argv

# Far above what an answer takes: reaching it means the caller was left hanging.
CALL_TIMEOUT = 120


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def timed_call(check: str, handle: Handle) -> None:
    start = time.monotonic()
    try:
        value = await asyncio.wait_for(handle.add(1, 2), timeout=CALL_TIMEOUT)
        emit(check=check, value=value)
    except Exception as e:  # noqa: BLE001 (any outcome is reported to the Rust side)
        emit(check=check, error=type(e).__name__, text=str(e), seconds=time.monotonic() - start)


async def main() -> None:
    agent_id: AgentId = AgentId(uid=uuid.UUID(sys.argv[1]))
    factory = factory_from_argv(sys.argv[2:])
    async with await factory.create_user_client(name='py-failing-caller') as client:
        handle: Handle = Handle(agent_id, exchange=client, request_serializer=SerializationStrategy.JSON)
        await timed_call('waiting', handle)
        deadline = time.monotonic() + CALL_TIMEOUT
        while await client.status(agent_id) != MailboxStatus.TERMINATED:
            if time.monotonic() > deadline:
                sys.exit('the failed agent was never terminated')
            await asyncio.sleep(0.05)
        await timed_call('later', handle)
    print('done', flush=True)


if __name__ == '__main__':
    asyncio.run(main())

"""Runs an academy-py agent that a Rust handle calls; prints its id, exits when it is shut down.

Usage: agents_py_agent.py (redis HOST PORT | http URL)
Prints {"agent_id": "<uid>"} once the agent is running, then "stopped".
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from academy.agent import action
from academy.agent import Agent
from academy.manager import Manager

from agents_common import factory_from_argv


class PyCalculator(Agent):
    """The Python counterpart of the Rust conformance Calculator."""

    @action
    async def add(self, a: int, b: int) -> int:
        return a + b

    @action
    async def echo(self, value: Any) -> Any:
        return value

    @action
    async def scale(self, x: float, *, factor: float = 1.0) -> float:
        return x * factor

    @action
    async def fail(self, text: str) -> None:
        raise ValueError(text)

    @action
    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


async def main() -> None:
    factory = factory_from_argv(sys.argv[1:])
    async with await Manager.from_exchange_factory(factory=factory) as manager:
        handle = await manager.launch(PyCalculator())
        print(json.dumps({'agent_id': str(handle.agent_id.uid)}), flush=True)
        await manager.wait([handle.agent_id])
    print('stopped', flush=True)


if __name__ == '__main__':
    asyncio.run(main())

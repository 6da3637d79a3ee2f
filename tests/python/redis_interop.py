"""academy-py 1.0's Redis transport talking to Rust peers on one Redis (driven by tests/tests/redis_interop.rs).

Usage:
  python redis_interop.py py-to-rust PORT FIXTURES_DIR   (then one JSON line on stdin)
  python redis_interop.py rust-to-py PORT                (then JSON lines on stdin)

Reports are JSON lines on stdout; the last one is {"done": true}. Any failure raises.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

from academy.agent import Agent, action
from academy.exception import MailboxTerminatedError
from academy.exchange import RedisExchangeFactory
from academy.identifier import AgentId, UserId
from academy.message import Message, PingRequest


class PyWorker(Agent):
    """Registered from Python so Rust can discover it."""

    @action
    async def noop(self) -> None:
        return None


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def read_line() -> dict:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit('stdin closed')
    return json.loads(line)


def fixture_messages(root: pathlib.Path) -> list[tuple[str, Message]]:
    return [
        (str(path.relative_to(root)), Message.model_validate_json(path.read_text()))
        for path in sorted((root / 'messages').rglob('*.json'))
    ]


async def py_to_rust(port: int, fixtures: pathlib.Path) -> None:
    factory = RedisExchangeFactory('127.0.0.1', port)
    me = await factory._create_transport(name='py-sender')
    registration = await me.register_agent(PyWorker, name='pyworker')
    await me.update_heartbeat()
    report(mailbox=me.mailbox_id.model_dump_json(), agent=str(registration.agent_id.uid))
    # The Rust side answers with its mailbox, its agent and a mailbox for us to terminate.
    rust = await read_line()
    dest = UserId.model_validate_json(rust['mailbox'])
    for name, fixture in fixture_messages(fixtures):
        header = fixture.header.model_copy(update={'src': me.mailbox_id, 'dest': dest})
        message = fixture.model_copy(update={'header': header})
        await me.send(message)
        report(sent=message.model_dump_json(), name=name)
    found = await me.discover(rust['behavior'], allow_subclasses=False)
    assert [str(a.uid) for a in found] == [rust['agent']], f'discover from Python found {found}'
    found = await me.discover('academy.agent.Agent', allow_subclasses=True)
    assert rust['agent'] in [str(a.uid) for a in found], 'Rust agent lists academy.agent.Agent'
    await me.terminate(UserId.model_validate_json(rust['victim']))
    report(done=True)
    await me.close()


async def rust_to_py(port: int) -> None:
    factory = RedisExchangeFactory('127.0.0.1', port)
    me = await factory._create_transport(name='py-receiver')
    report(mailbox=me.mailbox_id.model_dump_json())
    rust = await read_line()
    for _ in range(rust['count']):
        message = await me._recv(timeout=10)
        report(received=message.model_dump_json())
    agent = AgentId.model_validate_json(rust['agent'])
    found = await me.discover(rust['behavior'], allow_subclasses=True)
    assert agent in found, f'{agent} not discovered from Python: {found}'
    try:
        await me.send(Message.create(me.mailbox_id, UserId.model_validate_json(rust['victim']), PingRequest()))
        raise AssertionError('send to a mailbox Rust terminated succeeded')
    except MailboxTerminatedError:
        pass
    age = await me.heartbeat_status(UserId.model_validate_json(rust['mailbox']))
    assert age is not None and 0 <= age < 60, f'heartbeat written by Rust reads as {age}'
    # A request pending in the Rust agent: Rust terminates the agent and answers it.
    request = Message.create(me.mailbox_id, agent, PingRequest())
    await me.send(request)
    report(requested=str(request.tag))
    await read_line()
    notice = await me._recv(timeout=10)
    body = json.loads(notice.model_dump_json())['body']
    assert notice.tag == request.tag and body['kind'] == 'academy-error-response', notice
    assert body['error_code'] == 0, body
    report(done=True)
    await me.close()


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == 'py-to-rust':
        asyncio.run(py_to_rust(port, pathlib.Path(sys.argv[3])))
    elif mode == 'rust-to-py':
        asyncio.run(rust_to_py(port))
    else:
        raise SystemExit(f'unknown mode {mode}')


if __name__ == '__main__':
    main()

"""Shared helpers of the agent interop programs: build an academy-py exchange factory from argv."""

from __future__ import annotations

import sys
from typing import Any


def factory_from_argv(argv: list[str]) -> Any:
    """`redis HOST PORT` or `http URL` -> an academy-py ExchangeFactory."""
    kind = argv[0]
    if kind == 'redis':
        from academy.exchange.redis import RedisExchangeFactory

        return RedisExchangeFactory(argv[1], int(argv[2]))
    if kind == 'http':
        from academy.exchange.cloud.client import HttpExchangeFactory

        return HttpExchangeFactory(argv[1], ssl_verify=False)
    sys.exit(f'unknown exchange kind {kind!r} (expected redis or http)')

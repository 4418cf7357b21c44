"""Exists only to be type-checked: the shared budget's options (needs redis-py's types)."""

from __future__ import annotations

import redis.asyncio

import gptimage_async as gi
from gptimage_async.integrations.starlette import lifespan
from gptimage_async.testing import simulated_session


async def usage() -> None:
    async with gi.Session("runbase", redis="redis://127.0.0.1:6379/0") as session:
        await session.generate("a lamp")
    client = redis.asyncio.Redis.from_url("rediss://cache.example:6380/0")
    async with gi.Session("apiinone", redis=client) as session:
        await session.generate("a lamp")
    async with simulated_session("runbase", redis=client) as (_, session):
        await session.generate("a lamp")
    lifespan("runbase", redis="redis://127.0.0.1:6379/0", shutdown_timeout=5)

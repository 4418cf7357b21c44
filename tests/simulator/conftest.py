"""The simulator tests' raw HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A bare aiohttp client: the simulator is exercised over real HTTP, no ``Session``."""
    async with aiohttp.ClientSession() as client:
        yield client

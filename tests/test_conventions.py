"""Habits of the ecosystem a user relies on: package metadata, clear timeouts."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from gptimage_async.testing import simulated_session


def test_the_package_metadata_has_urls_and_a_licence() -> None:
    meta = importlib.metadata.metadata("gptimage-async")
    assert meta["License-Expression"] == "MIT"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert urls["Homepage"].startswith("https://")
    assert {"Source", "Changelog"} <= set(urls)


async def test_a_bounded_wait_says_what_timed_out() -> None:
    async with simulated_session("runbase") as (sim, session):
        sim.config = sim.config.replace(time_scale=1.0)  # 3-10 s runs: the wait ends first
        run = await session.submit("a ceramic lamp")
        with pytest.raises(TimeoutError) as caught:
            await run.result(timeout=0.05)
        message = str(caught.value)
        assert re.search(rf"run {run.id} did not resolve within 0.05 s", message)
        assert "the run carries on" in message
        assert not run.done()
        await session.aclose(cancel=True)

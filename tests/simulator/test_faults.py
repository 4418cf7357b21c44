"""Injected faults: 5xx, resets, truncated bodies, slow answers, outages, BOMs, redirects."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import msgspec
import pytest

from gptimage_async.simulator import Faults

from .wire import (
    RB_KEY,
    RB_MODEL,
    RESET_ERRORS,
    ManualClock,
    aio_create,
    aio_get,
    auth,
    make,
    rb_create,
    rb_get,
    task_id_of,
)

# -- faults ----------------------------------------------------------------------------


async def test_create_5xx_creates_nothing(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(create_5xx=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 503
        assert (await aio_create(session, sim)).status == 503
        assert sim.stats.creates == 0
        assert sim.stats.create_requests == 2
        assert sim.stats.faults["create_5xx"] == 2
        assert (await rb_get(session, sim, "run_x")).status == 404  # polls unaffected


async def test_poll_5xx(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(poll_5xx=1.0)) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        statuses = set()
        for _ in range(30):
            answer = await rb_get(session, sim, run_id)
            assert answer.status in (500, 502, 503)
            assert len(answer.body) < 100
            statuses.add(answer.status)
        assert statuses == {500, 502, 503}
        assert sim.stats.faults["poll_5xx"] == 30
        assert sim.stats.creates == 1


async def test_partial_fault_rate(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(poll_5xx=0.3)) as sim:
        statuses = [(await rb_get(session, sim, "run_x")).status for _ in range(200)]
        failed = sum(1 for s in statuses if s >= 500)
        assert 30 <= failed <= 90
        assert sim.stats.faults["poll_5xx"] == failed


async def test_reset_before_processing(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(reset=1.0)) as sim:
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim)
        with pytest.raises(RESET_ERRORS):
            await aio_create(session, sim)
        with pytest.raises(RESET_ERRORS):
            await rb_get(session, sim, "run_x")
        assert sim.stats.creates == 0
        assert sim.stats.create_requests == 2
        # aiohttp's client itself retries an idempotent GET once after a reset.
        assert sim.stats.polls in (1, 2)
        assert sim.stats.faults["reset"] == sim.stats.requests
        assert sum(sim.stats.status_counts.values()) == 0
        sim.set_faults(Faults())
        assert (await rb_create(session, sim)).status == 200  # the client recovers


async def test_reset_after_create_leaves_a_paid_run(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(reset_after_create=1.0), credits=100) as sim:
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim, "ambiguous")
        assert sim.stats.creates == 1
        assert sim.balance(RB_KEY) == 90
        (run,) = sim.runs.values()
        assert run.prompt == "ambiguous"
        with pytest.raises(RESET_ERRORS):
            await rb_create(session, sim, "ambiguous")
        assert sim.stats.duplicates == 1
        assert (await rb_get(session, sim, run.id)).status == 200  # polls unaffected


async def test_truncated_json(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(truncated_json=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 200
        with pytest.raises(msgspec.DecodeError):
            answer.json()
        assert sim.stats.creates == 1
        (run_id,) = sim.runs
        assert answer.body.startswith(b'{"id":"run_')
        poll = await rb_get(session, sim, run_id)
        assert poll.status == 200
        with pytest.raises(msgspec.DecodeError):
            poll.json()
        assert (await aio_create(session, sim)).status == 200
        assert sim.stats.faults["truncated_json"] == 3
        # Errors are never truncated: only genuine successes are spoiled.
        assert (await rb_get(session, sim, "run_x")).json()["error"]["code"] == "run_not_found"


async def test_truncated_terminal_poll_does_not_count_as_seen(
    session: aiohttp.ClientSession,
) -> None:
    clock = ManualClock()
    async with make(duration="fixed", duration_median=1.0, clock=clock) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        clock.advance(0.02)
        sim.set_faults(Faults(truncated_json=1.0))
        await rb_get(session, sim, run_id)
        assert sim.runs[run_id].first_seen_done_at is None
        sim.set_faults(Faults())
        await rb_get(session, sim, run_id)
        assert sim.runs[run_id].first_seen_done_at is not None


async def test_create_500_after_effect(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(create_500_after_effect=1.0)) as sim:
        answer = await aio_create(session, sim)
        assert answer.status == 500
        assert answer.body == b""
        assert sim.stats.creates == 1
        assert sim.stats.faults["create_500_after_effect"] == 1
        (task_id,) = sim.runs
        assert (await aio_get(session, sim, task_id)).status == 200


async def test_slow_answers(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(slow=1.0, slow_seconds=10.0)) as sim:  # 0.1 s
        started = time.monotonic()
        answer = await rb_create(session, sim)
        assert answer.status == 200
        assert time.monotonic() - started >= 0.09
        assert sim.stats.faults["slow"] == 1
        # A client that gives up early still leaves a created run behind.
        timeout = aiohttp.ClientTimeout(total=0.03)
        body = {"model": RB_MODEL, "input": {"prompt": "timed out"}}
        url = sim.base_url("runbase") + "/runs"
        with pytest.raises(TimeoutError):
            async with session.post(url, json=body, headers=auth(RB_KEY), timeout=timeout):
                pass
        assert sim.stats.runs_per_prompt["timed out"] == 1


async def test_close_while_a_slow_answer_is_pending(session: aiohttp.ClientSession) -> None:
    sim = make(faults=Faults(slow=1.0, slow_seconds=1000.0))
    await sim.start()
    pending = asyncio.create_task(rb_create(session, sim))
    async with asyncio.timeout(10):
        await sim.until(lambda: sim.stats.creates == 1)  # held: its answer 10 s away
    started = time.monotonic()
    await sim.close()
    assert time.monotonic() - started < 2.0
    with pytest.raises(aiohttp.ClientError):
        await pending


async def test_scheduled_outage(session: aiohttp.ClientSession) -> None:
    # Provider seconds 4-8 at 0.05: 0.2-0.4 s on the simulator's clock after start.
    clock = ManualClock()
    async with make(time_scale=0.05, faults=Faults(outage=(4.0, 8.0)), clock=clock) as sim:
        assert (await rb_create(session, sim)).status == 200
        clock.advance(0.25)
        assert (await rb_create(session, sim)).status == 503
        assert (await aio_get(session, sim, "task_x")).status == 503
        clock.advance(0.2)
        assert (await rb_create(session, sim)).status == 200
        assert sim.stats.creates == 2
        assert sim.stats.faults["outage"] == 2


async def test_manual_outage(session: aiohttp.ClientSession) -> None:
    async with make() as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        sim.start_outage()
        assert (await rb_create(session, sim)).status == 503
        assert (await rb_get(session, sim, run_id)).status == 503
        assert sim.stats.creates == 1
        sim.end_outage()
        assert (await rb_get(session, sim, run_id)).status == 200


async def test_faults_only_hit_the_chosen_protocols(session: aiohttp.ClientSession) -> None:
    faults = Faults(create_5xx=1.0, poll_5xx=1.0, applies_to=frozenset({"runbase"}))
    async with make(faults=faults, apiinone_shape="flat") as sim:
        assert (await rb_create(session, sim)).status == 503
        created = await aio_create(session, sim)
        assert created.status == 200
        assert (await aio_get(session, sim, task_id_of(created.json()))).status == 200


async def test_bom_fault_prefixes_json_answers(session: aiohttp.ClientSession) -> None:
    async with make(faults=Faults(bom=1.0)) as sim:
        answer = await rb_create(session, sim)
        assert answer.status == 200
        assert answer.body.startswith(b"\xef\xbb\xbf{")
        assert msgspec.json.decode(answer.body[3:])["status"] == "pending"
        assert sim.stats.faults["bom"] == 1


async def test_poll_redirect_fault_redirects_once_to_the_same_origin(
    session: aiohttp.ClientSession,
) -> None:
    async with make(faults=Faults(poll_redirect=1.0)) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        url = f"{sim.base_url('runbase')}/runs/{run_id}"
        async with session.get(url, headers=auth(RB_KEY), allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"] == f"/runbase/api/v1/runs/{run_id}?redirected=1"
        assert (await rb_get(session, sim, run_id)).status == 200  # followed: answered
        assert sim.stats.faults["poll_redirect"] == 2


async def test_keepalive_close_fault_closes_after_answering() -> None:
    async with make(faults=Faults(keepalive_close=1.0)) as sim:  # 10 ms
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(
            f"GET {sim.base_url('runbase')}/runs/x HTTP/1.1\r\nHost: h\r\n"
            f"Authorization: Bearer {RB_KEY}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: keep-alive" in head
        await asyncio.wait_for(reader.read(), 5.0)  # EOF comes: the server closed it
        assert reader.at_eof()
        writer.close()
        assert sim.stats.faults["keepalive_close"] == 1

"""The fleet's cold start (issue 22): one scout for every process on a key, through real Redis.

The lease is taken with the durations' sync (``DurationFeed``); the poll
scheduler's side is a small real object with the same surface
(``fleet_scouts.Scouting``), and, last, real worker processes on the simulator.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as redis_asyncio

from gptimage_async._budget import budget_id
from gptimage_async._budget.fleet_scouts import SCOUT_LEASE_SYNCS, scout_key, wants_lease
from gptimage_async._budget.protocol import SharedBudget
from gptimage_async._budget.shared_durations import DurationFeed, stream_key
from gptimage_async._durations import DurationModel
from gptimage_async.simulator import Simulator

from .conftest import RedisServer, client_of
from .test_fleet import KEY as FLEET_KEY
from .test_fleet import batch_opts, check_batch, collect, sim_config, spawn, start_together

KEY = "sk-scouts-secret-789"
BUDGET = budget_id("runbase", KEY)
LEASE = 1.0  # seconds the lease outlives its holder's last renewal


class Lane:
    """The scheduler's surface the lease drives: runs in flight, and what it was told."""

    def __init__(self, in_flight: int = 0) -> None:
        self.scouts_elsewhere = 0
        self.in_flight = in_flight
        self.changed = 0
        self.told = asyncio.Event()

    def __len__(self) -> int:
        return self.in_flight

    def fleet_changed(self) -> None:
        self.changed += 1
        self.told.set()


def feed(client: redis_asyncio.Redis, model: DurationModel, lane: Lane) -> DurationFeed:
    shared = SharedBudget(client, 2.0, BUDGET)
    return DurationFeed(lambda: shared, model, scouts=lane, lease=LEASE)


def test_only_a_cold_process_wants_the_lease_and_early_or_with_runs() -> None:
    assert wants_lease(cold=True, in_flight=0, syncs=0)
    assert not wants_lease(cold=True, in_flight=0, syncs=SCOUT_LEASE_SYNCS)
    assert wants_lease(cold=True, in_flight=3, syncs=SCOUT_LEASE_SYNCS)
    assert not wants_lease(cold=False, in_flight=3, syncs=0)


async def test_one_process_scouts_the_others_wait_for_its_duration(
    redis_server: RedisServer,
) -> None:
    async with client_of(redis_server.url) as client:
        first, second = DurationModel(), DurationModel()
        lane_a, lane_b = Lane(in_flight=1), Lane(in_flight=4)
        a, b = feed(client, first, lane_a), feed(client, second, lane_b)
        await a.sync()
        await b.sync()
        await a.sync()  # renewed, still the holder
        assert (lane_a.scouts_elsewhere, lane_b.scouts_elsewhere) == (0, 1)
        lease = scout_key(BUDGET)
        assert (await client.get(lease)).decode() == a.me
        # It lapses unless renewed: a dead holder never blocks the fleet for long.
        assert 0 < await client.pttl(lease) <= LEASE * 1000
        # The scout's duration: its holder drops the lease as it sends it ...
        first.observe(3.0, 3.4)
        await a.sync()
        assert await client.get(lease) is None
        # ... and the others take it from the stream and release their parked runs.
        await b.sync()
        assert second.longest == 3.4 and lane_b.changed >= 1
        assert lane_b.scouts_elsewhere == 0
        # Nobody takes the lease again once the stream holds a duration.
        assert await client.get(lease) is None
        # The lease names a random process id, never the key.
        keys = [k.decode() for k in await client.keys("*")]
        assert keys == [stream_key(BUDGET)]
        assert not any(KEY in k for k in keys)


async def test_a_lapsed_holder_lets_a_waiting_process_probe(redis_server: RedisServer) -> None:
    async with client_of(redis_server.url) as client:
        lane_a, lane_b = Lane(in_flight=1), Lane(in_flight=2)
        a = feed(client, DurationModel(), lane_a)
        b = feed(client, DurationModel(), lane_b)
        await a.sync()
        await b.sync()
        assert lane_b.scouts_elsewhere == 1 and lane_b.changed == 0
        # The holder died: its lease lapses (its time to live, checked above, ends).
        # (its expiry moved to the past: Redis drops it as at the end of its time to live).
        await client.pexpireat(scout_key(BUDGET), 1)
        assert not await client.exists(scout_key(BUDGET))
        await b.sync()
        # B holds it now, and was told: a run of its own probes.
        assert (await client.get(scout_key(BUDGET))).decode() == b.me
        assert (lane_b.scouts_elsewhere, lane_b.changed) == (0, 1)
        # A process with no run in flight after its start gives a held lease up.
        lane_b.in_flight = 0
        for _ in range(SCOUT_LEASE_SYNCS):
            await b.sync()
        assert await client.get(scout_key(BUDGET)) is None


async def test_with_redis_gone_a_waiting_process_probes_on_its_own(
    redis_server: RedisServer,
) -> None:
    async with client_of(redis_server.url) as client:
        lane_a, lane_b = Lane(in_flight=1), Lane(in_flight=3)
        a = feed(client, DurationModel(), lane_a)
        b = feed(client, DurationModel(), lane_b)
        await a.sync()
        await b.sync()
        assert lane_b.scouts_elsewhere == 1 and not lane_b.told.is_set()
        redis_server.kill()
        syncing = asyncio.ensure_future(b.run(0.01))
        try:
            # The first failed sync: the scout elsewhere is forgotten, one of B's runs probes.
            async with asyncio.timeout(30.0):
                await lane_b.told.wait()
        finally:
            syncing.cancel()
            await asyncio.gather(syncing, return_exceptions=True)
        assert lane_b.scouts_elsewhere == 0 and b.failures >= 1


async def test_a_fleet_of_real_processes_elects_one_scout(redis_server: RedisServer) -> None:
    holders: set[bytes] = set()
    seen: list[tuple[float, bytes | None]] = []
    lease = scout_key(budget_id("runbase", FLEET_KEY))

    async def watch() -> None:
        async with client_of(redis_server.url) as client:
            while True:
                holder = await client.get(lease)
                if not seen or seen[-1][1] != holder:
                    seen.append((time.monotonic(), holder))
                if holder is not None:
                    holders.add(holder)
                await asyncio.sleep(0.002)

    async with Simulator(sim_config()) as sim:
        procs = [await spawn(batch_opts(sim, redis_server, f"s{i}", 20, go=True)) for i in range(3)]
        watcher = asyncio.ensure_future(watch())
        await start_together(procs)
        results = [await collect(p) for p in procs]
        watcher.cancel()
        check_batch(sim, results, 60)
    # One process probed for the fleet; the lease is gone once a duration was known.
    assert len(holders) == 1, seen
    async with client_of(redis_server.url) as client:
        assert await client.get(lease) is None

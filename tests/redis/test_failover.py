"""Redis fails over: the limiter follows the new primary through a real redis-sentinel.

A primary, its replica and one Sentinel run as real processes; ``SENTINEL
FAILOVER`` promotes the replica and demotes the old primary to a read-only
replica, as a real failover does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis_asyncio

import gptimage_async as gi
from gptimage_async._budget.keys import BudgetKeys, budget_id
from gptimage_async._budget.shared import SharedLimiter

from .conftest import RedisServer, free_port

SENTINEL = shutil.which("redis-sentinel")
KEY = "sk-failover"
BELIEF = gi.RateLimit(requests=20, per=1.0, ceiling=True)
SERVICE = "budget"


class Replica(RedisServer):
    """A redis-server that starts as a replica of ``primary_port``."""

    def __init__(self, workdir: Path, primary_port: int) -> None:
        super().__init__(workdir)
        self.primary_port = primary_port

    def start(self) -> None:
        super().start()
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "REPLICAOF", "127.0.0.1", str(self.primary_port)],
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def sentinel_process(workdir: Path, primary_port: int) -> Iterator[int]:
    port = free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
    )
    assert SENTINEL is not None
    proc = subprocess.Popen(
        [SENTINEL, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


async def until(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await check():  # type: ignore[operator]
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, int]]:
    if SENTINEL is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-sentinel is not installed")
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    (tmp_path / "s").mkdir()
    primary = RedisServer(tmp_path / "p")
    primary.start()
    replica = Replica(tmp_path / "r", primary.port)
    try:
        replica.start()
        with sentinel_process(tmp_path / "s", primary.port) as port:
            yield primary, replica, port
    finally:
        # SIGKILL, not SIGTERM: after the failover one server is a primary with a
        # replica, and on SIGTERM Redis waits up to shutdown-timeout (10 s) for that
        # replica to catch up. Neither holds anything worth saving (no persistence).
        replica.kill()
        primary.kill()


async def members(client: redis_asyncio.Redis) -> set[str]:
    procs = BudgetKeys(budget_id("runbase", KEY)).procs
    return {m.decode() for m in await client.zrange(procs, 0, -1)}


async def test_the_limiter_follows_a_failover_through_sentinel(
    cluster: tuple[RedisServer, RedisServer, int], caplog: pytest.LogCaptureFixture
) -> None:
    primary, replica, sentinel_port = cluster
    sentinel = redis_asyncio.Redis(port=sentinel_port)
    new_primary = redis_asyncio.Redis(port=replica.port)
    old_primary = redis_asyncio.Redis(port=primary.port)

    async def replica_known() -> bool:
        replicas = await sentinel.execute_command("SENTINEL", "REPLICAS", SERVICE)
        return bool(replicas) and b"master-link-status" in replicas[0]

    await until(replica_known, "the Sentinel to see the replica")
    url = f"redis+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}"
    caplog.set_level(logging.INFO, logger="gptimage_async")
    early = SharedLimiter(BELIEF, provider="runbase", api_key=KEY, redis=url, timeout=0.5)
    await early.start()
    late: SharedLimiter | None = None
    try:
        for _ in range(3):
            await early.acquire()
        assert early.granted == 3 and not early.fallback
        await sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)

        async def promoted() -> bool:
            return bool((await new_primary.execute_command("ROLE"))[0] == b"master")

        # Sentinel demotes the old primary itself, but only once it has reported
        # itself a primary for 8 s (4 x Sentinel's 2 s publish period), seen on its
        # 10 s INFO period: about 11 s of waiting. Sending the same REPLICAOF as soon
        # as the replica is promoted changes nothing the client sees: it still finds
        # the new primary through Sentinel alone, and the old one turns read-only.
        await until(promoted, "the Sentinel to promote the replica")
        await old_primary.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))

        async def switched() -> bool:
            # The replica promoted, and the old primary a read-only replica of it.
            new = await new_primary.execute_command("ROLE")
            old = await old_primary.execute_command("ROLE")
            return bool(new[0] == b"master" and old[0] == b"slave")

        await until(switched, "the failover to finish")
        # The worker that was running reaches the new primary, not local pacing for good.
        granted = early.granted
        for _ in range(40):
            await early.acquire()
            if early.granted >= granted + 3:
                break
        assert early.granted >= granted + 3, early
        # A worker started after the failover sees the fleet on the new primary.
        late = SharedLimiter(BELIEF, provider="runbase", api_key=KEY, redis=url, timeout=0.5)
        await late.start()
        await late.acquire()
        assert not late.fallback and late.live_processes >= 2, late
        assert {early.me, late.me} <= await members(new_primary)
    finally:
        for lim in (early, late):
            if lim is not None:
                await lim.aclose()
        await sentinel.aclose()
        await new_primary.aclose()
        await old_primary.aclose()


async def test_a_plain_url_follows_the_demoted_primary_to_the_new_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # A failover without Sentinel in the client's view: the URL still names the
    # old primary, now a read-only replica of the new one.
    replica = Replica(tmp_path, redis_server.port)
    replica.start()
    old = redis_asyncio.Redis.from_url(redis_server.url)
    new = redis_asyncio.Redis(port=replica.port)
    early = SharedLimiter(BELIEF, provider="runbase", api_key=KEY, redis=redis_server.url)
    await early.start()
    late: SharedLimiter | None = None
    try:
        await early.acquire()
        await new.execute_command("REPLICAOF", "NO", "ONE")
        await old.execute_command("REPLICAOF", "127.0.0.1", str(replica.port))
        granted = early.granted
        for _ in range(60):
            await early.acquire()
            if early.granted >= granted + 3:
                break
        assert early.granted >= granted + 3, early
        late = SharedLimiter(BELIEF, provider="runbase", api_key=KEY, redis=redis_server.url)
        await late.start()

        async def both_on_the_new_primary() -> bool:
            await late.acquire()
            return {early.me, late.me} <= await members(new)

        await until(both_on_the_new_primary, "both limiters on the new primary", 15.0)
        assert not late.fallback and late.live_processes >= 2, late
    finally:
        for lim in (early, late):
            if lim is not None:
                await lim.aclose()
        await old.aclose()
        await new.aclose()
        replica.stop()


async def test_a_process_that_never_saw_the_fleet_does_not_take_it_all(
    redis_server: RedisServer,
) -> None:
    redis_server.stop()
    lim = SharedLimiter(
        BELIEF, provider="runbase", api_key=KEY, redis=redis_server.url, timeout=0.1
    )
    await lim.start()
    try:
        assert lim.fallback
        assert lim.rate <= BELIEF.rate / 2  # not the whole belief: others may be out there
    finally:
        await lim.aclose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis+sentinel://:hunter2@h1:26379,h2/svc/1", "redis+sentinel://:***@h1:26379,h2/svc/1"),
        ("redis+sentinel://h1/svc", "redis+sentinel://h1/svc"),
    ],
)
def test_sentinel_urls_are_read_and_redacted(url: str, shown: str) -> None:
    from gptimage_async._budget.options import parse_sentinel_url, redact_url

    assert redact_url(url) == shown
    target = parse_sentinel_url(url)
    assert target.service == "svc" and target.sentinels[0][0] == "h1"
    gi.Session("runbase", api_key=KEY, redis=url)  # accepted before anything opens


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://h1", "redis+sentinel://:hunter2@h1:99999/svc", "redis+sentinel://h1/svc/x"],
)
def test_a_bad_sentinel_url_is_refused_early(url: str) -> None:
    with pytest.raises(gi.ConfigurationError) as info:
        gi.Session("runbase", api_key=KEY, redis=url)
    assert "hunter2" not in str(info.value)

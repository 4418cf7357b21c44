"""A learned state saves, loads, and is ignored (never an error) when it cannot be trusted."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import msgspec
import pytest

import gptimage_async as gi
from gptimage_async._budget import AdaptiveRate
from gptimage_async._durations import DurationModel
from gptimage_async._state import (
    MAX_AGE,
    MAX_OBSERVATIONS,
    VERSION,
    FileStateStore,
    LearnedRate,
    LearnedState,
    apply_state,
    capture_state,
    decode_state,
    encode_state,
)
from gptimage_async.simulator import Simulator
from gptimage_async.testing import scaled_rate_limit, simulated_session

from .helpers import config, observed, warm

URL = "https://runbase.net/api/v1"


def state(**changes: object) -> LearnedState:
    base = LearnedState(
        provider="runbase",
        base_url=URL,
        saved_at=time.time(),
        rate=LearnedRate(requests=20, per=10.0, rate=2.1, bad=2.2, confirmed=True),
        durations=[(0.0, 9.6), (9.6, 10.4), (3.0, 3.2)],
    )
    return msgspec.structs.replace(base, **changes)


async def test_a_saved_state_loads(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "cache" / "runbase.json")  # the directory is created
    saved = state()
    await store.save(saved)
    assert await store.load("runbase", URL) == saved
    assert list(tmp_path.joinpath("cache").iterdir()) == [store.path]  # no temporary left


async def test_a_missing_file_is_no_state(tmp_path: Path) -> None:
    assert await FileStateStore(tmp_path / "nothing.json").load("runbase", URL) is None


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"version": 1}',
        b"[1, 2, 3]",
        b'{"version": 1, "provider": "runbase", "base_url": "x", "saved_at": "yesterday"}',
        b"\xff\xfe garbage",
    ],
)
async def test_a_corrupt_file_is_ignored_with_a_debug_line(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.DEBUG, logger="gptimage_async"):
        assert await FileStateStore(path).load("runbase", URL) is None
    assert any("ignoring the learned state" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


async def test_a_directory_in_the_way_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    assert await FileStateStore(tmp_path / "state.json").load("runbase", URL) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"version": VERSION + 1},
        {"provider": "apiinone"},
        {"base_url": "http://127.0.0.1:8080/runbase/api/v1"},
        {"saved_at": time.time() - MAX_AGE - 60},
        {"saved_at": time.time() + 3600},  # from the future: a clock that jumped
        {"rate": LearnedRate(requests=20, per=10.0, rate=float("nan"))},
        {"rate": LearnedRate(requests=20, per=10.0, rate=-1.0)},
    ],
)
def test_a_stale_or_foreign_state_is_ignored(changes: dict[str, object]) -> None:
    data = encode_state(state(**changes))
    assert decode_state(data, provider="runbase", base_url=URL) is None


def test_a_state_without_a_rate_or_durations_is_fine() -> None:
    data = encode_state(state(rate=None, durations=[]))
    loaded = decode_state(data, provider="runbase", base_url=URL)
    assert loaded is not None and loaded.rate is None and loaded.durations == []


async def test_saving_replaces_the_previous_state(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path / "state.json")
    await store.save(state(durations=[(0.0, 1.0)]))
    await store.save(state(durations=[(0.0, 2.0)]))
    loaded = await store.load("runbase", URL)
    assert loaded is not None and loaded.durations == [(0.0, 2.0)]
    assert "state.json" in repr(store)


async def test_a_session_saves_on_close_and_the_next_one_starts_warm(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    cfg = config()
    async with Simulator(cfg) as sim:
        options = {
            "api_key": "sk-sim-test",
            "base_url": sim.base_url("runbase"),
            "rate_limit": scaled_rate_limit(cfg),
            "state_file": path,
        }
        async with gi.Session("runbase", **options) as first:
            assert not warm(first)
            await first.generate_many([f"a cat {i}" for i in range(8)])
            learned = observed(first)
        saved = decode_state(
            path.read_bytes(), provider="runbase", base_url=sim.base_url("runbase")
        )
        assert saved is not None and len(saved.durations) == learned >= 4
        assert saved.rate is not None and saved.rate.requests == 20
        async with gi.Session("runbase", **options) as second:
            assert warm(second)  # no cold start
            assert observed(second) == learned
            assert second.limiter.rate == pytest.approx(saved.rate.rate)


async def test_a_corrupt_state_file_does_not_stop_a_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\x00 not a state")
    with caplog.at_level(logging.DEBUG, logger="gptimage_async"):
        async with simulated_session(config=config(), state_file=path) as (_, session):
            assert "learning (0 observed)" in repr(session.scheduler)  # nothing was loaded
            await session.generate("a cat")
    assert any("ignoring the learned state" in r.getMessage() for r in caplog.records)
    assert decode_state(path.read_bytes(), provider="runbase", base_url=session.base_url)


async def test_a_rate_learned_from_another_belief_is_not_used() -> None:
    model = DurationModel()
    adaptive = AdaptiveRate(gi.RateLimit(40, 10.0))
    apply_state(
        state(), belief=gi.RateLimit(40, 10.0), adaptive=adaptive, model=model, clock_now=0.0
    )
    assert adaptive.rate == pytest.approx(4.0)  # the user now says 40 per 10 s
    assert model.observed == 3  # durations are the provider's, whatever the belief
    same = AdaptiveRate(gi.RateLimit(20, 10.0))
    apply_state(
        state(), belief=gi.RateLimit(20, 10.0), adaptive=same, model=DurationModel(), clock_now=0.0
    )
    assert same.rate == pytest.approx(2.1) and same.confirmed


def test_capture_keeps_the_latest_observations() -> None:
    model = DurationModel()
    for i in range(MAX_OBSERVATIONS + 50):
        model.observe(0.0, 1.0 + i / 1000)
    captured = capture_state(
        provider="runbase", base_url=URL, belief=gi.RateLimit(20, 10.0), adaptive=None, model=model
    )
    assert captured.rate is None
    assert len(captured.durations) == MAX_OBSERVATIONS
    assert captured.durations[-1] == (0.0, 1.0 + (MAX_OBSERVATIONS + 49) / 1000)


def test_requests_of_the_last_window_are_noted_by_the_next_session() -> None:
    first = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    for i in range(20):
        first.record_send(100.0 + i * 0.25, saturated=False)  # 20 in the last 5 s
    saved = capture_state(
        provider="runbase",
        base_url=URL,
        belief=gi.RateLimit(20, 10.0),
        adaptive=first,
        model=DurationModel(),
        clock_now=105.0,
        now=1000.0,
    )
    assert saved.rate is not None and len(saved.rate.recent) == 20
    second = AdaptiveRate(gi.RateLimit(20, 10.0), now=0.0)
    # Opened 2 s later (wall clock), on a loop clock that starts anywhere.
    apply_state(
        saved,
        belief=gi.RateLimit(20, 10.0),
        adaptive=second,
        model=DurationModel(),
        clock_now=7.0,
        now=1002.0,
    )
    # The earliest of those 20 was sent 7 s ago: the next slot is when it leaves the window.
    assert second.window_free() == pytest.approx(0.0 + 10.0 * (1 + second.margin))


async def test_remember_false_keeps_no_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with pytest.raises(gi.ConfigurationError, match="remember"):
        gi.Session("runbase", api_key="sk-x", state_file=path, remember="no")  # type: ignore[arg-type]
    async with simulated_session(config=config(), state_file=path, remember=False) as (_, s):
        await s.generate("a cat")
    assert not path.exists()


@pytest.mark.parametrize(("run_timeout", "kept"), [(5.0, 1), (10.0, 2), (11.0, 3), (900.0, 3)])
def test_durations_longer_than_this_sessions_run_timeout_are_not_restored(
    run_timeout: float, kept: int
) -> None:
    # A model believing runs outlast the deadline would plan every poll past it.
    model = DurationModel()
    apply_state(
        state(),
        belief=gi.RateLimit(20, 10.0),
        adaptive=None,
        model=model,
        clock_now=0.0,
        run_timeout=run_timeout,
    )
    assert model.observed == kept

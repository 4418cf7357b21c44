"""Relative image URLs in a pool of sellers resolve against the run's own lane's API root.

Each lane here is its own simulator (its own host and port), answering image
URLs as paths on its own host (``/files/...``, ``relative_image_urls``). A
relative URL resolved against the first lane's root would be fetched from the
wrong host, which does not know the run: the image, paid for, would be lost.
"""

from __future__ import annotations

import copy
import pickle
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_cli import run_main, simulator_thread

KEY_A, KEY_B = "sk-rel-a", "sk-rel-b"
#: Tight enough that ``earliest`` routing fills both lanes.
TIGHT = gi.RateLimit(4, 0.4)
PROMPTS = [f"a lamp, take {i}" for i in range(8)]


def config(key: str) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=0.01,
        rate_limit=None,
        seed=22 if key == KEY_A else 23,
        api_keys=frozenset({key}),
        relative_image_urls=True,
    )


def lane(sim: Simulator, key: str) -> gi.Lane:
    return gi.Lane("runbase", key, base_url=sim.base_url("runbase"), rate_limit=TIGHT)


def session(a: Simulator, b: Simulator) -> gi.Session:
    return gi.Session(lanes=[lane(a, KEY_A), lane(b, KEY_B)], routing="earliest", remember=False)


async def test_a_result_holds_its_urls_absolute_on_its_lanes_host(tmp_path: Path) -> None:
    # The simulator answers "/files/..." (relative_image_urls); the result says
    # where, so it means the same copied, pickled, downloaded or shown.
    async with Simulator(config(KEY_A)) as a, Simulator(config(KEY_B)) as b:
        async with session(a, b) as pool:
            results = await pool.generate_many(PROMPTS[:6])
            hosts = {KEY_A: a.base_url("runbase"), KEY_B: b.base_url("runbase")}
            roots = {urlsplit(url).netloc for url in hosts.values()}
            assert len(roots) == 2
            for i, result in enumerate(results):
                assert isinstance(result, gi.Result)
                [url] = result.urls
                assert url.startswith("http://") and urlsplit(url).netloc in roots
                [path] = await gi.download(result, tmp_path / f"d{i}", transport=pool.transport)
                assert path.read_bytes().startswith(b"\x89PNG")
                [path] = await copy.copy(result).save(tmp_path / f"c{i}")
                assert path.stat().st_size > 0
                [path] = await pickle.loads(pickle.dumps(result)).save(tmp_path / f"p{i}")
                assert path.stat().st_size > 0
                assert f'src="{url}"' in result._repr_html_()
        assert min(a.stats.creates, b.stats.creates) > 0


async def test_a_batch_saves_every_lanes_images(tmp_path: Path) -> None:
    async with Simulator(config(KEY_A)) as a, Simulator(config(KEY_B)) as b:
        async with session(a, b) as pool:
            report = await gi.Batch(pool, PROMPTS, tmp_path).run()
        used = (a.stats.creates, b.stats.creates)
    assert min(used) > 0, used  # both lanes made runs, so the second lane's roots were needed
    assert report.ok
    assert Counter(e.status for e in report.entries) == {"succeeded": len(PROMPTS)}
    files = [name for e in report.entries for name in e.files]
    assert len(files) == len(PROMPTS) and all((tmp_path / name).is_file() for name in files)


async def test_result_save_fetches_from_the_lane_that_made_the_run(tmp_path: Path) -> None:
    async with Simulator(config(KEY_A)) as a, Simulator(config(KEY_B)) as b:
        async with session(a, b) as pool:
            results = await pool.generate_many(PROMPTS[:6])
            for i, result in enumerate(results):
                assert isinstance(result, gi.Result)
                [path] = await result.save(tmp_path / str(i))
                assert path.stat().st_size > 0
                [data] = await result.read()
                assert data.startswith(b"\x89PNG")
        assert min(a.stats.creates, b.stats.creates) > 0


def test_generate_over_a_pool_saves_every_lanes_images(tmp_path: Path) -> None:
    with simulator_thread(config(KEY_A)) as a, simulator_thread(config(KEY_B)) as b:
        pool = tmp_path / "pool.toml"
        pool.write_text(
            'routing = "earliest"\n'
            f'[lanes.a]\nprovider = "runbase"\nkey_env = "REL_A"\n'
            f'base_url = "{a.base_url("runbase")}"\nrate_limit = "4/0.4"\n'
            f'[lanes.b]\nprovider = "runbase"\nkey_env = "REL_B"\n'
            f'base_url = "{b.base_url("runbase")}"\nrate_limit = "4/0.4"\n'
        )
        out = tmp_path / "out"
        done = run_main(
            "generate", "a lamp", "--n", "6", "--pool", str(pool), "--out", str(out),
            key=None, env={"REL_A": KEY_A, "REL_B": KEY_B},
        )  # fmt: skip
        used = (a.stats.creates, b.stats.creates)
    assert done.code == 0, done.stderr
    assert min(used) > 0, used
    printed = done.stdout.split()  # each URL absolute, on the host of the lane that made it
    assert len(printed) == 6 and all(url.startswith("http://127.0.0.1:") for url in printed)
    assert len(list(out.glob("*.png"))) == 6


async def test_a_rerun_with_the_lanes_in_another_order_says_nothing_moved(tmp_path: Path) -> None:
    async with (
        Simulator(config(KEY_A)) as a,
        Simulator(config(KEY_B)) as b,
        Simulator(config(KEY_B)) as c,
    ):
        async with session(a, b) as pool:
            assert (await gi.Batch(pool, PROMPTS, tmp_path).run()).ok
        lanes = [lane(b, KEY_B), lane(a, KEY_A)]  # the same lanes, the other first
        async with gi.Session(lanes=lanes, remember=False) as pool:
            assert gi.Batch(pool, PROMPTS, tmp_path).endpoint_notice() is None
        # A lane at a root the last batch did not use is still said.
        async with gi.Session(lanes=[lane(c, KEY_B)], remember=False) as pool:
            notice = gi.Batch(pool, PROMPTS, tmp_path).endpoint_notice()
        assert notice is not None and c.base_url("runbase") in notice

"""Both protocols end to end over real HTTP: create, poll, download the image."""

from __future__ import annotations

import re

import aiohttp

from .wire import (
    RB_KEY,
    RB_MODEL,
    ManualClock,
    aio_create,
    aio_wait,
    make,
    png_size,
    rb_create,
    rb_get,
    request,
)

# -- happy paths -----------------------------------------------------------------


async def test_runbase_happy_path(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()  # provider time moved on by hand, 5 ms a look
    async with make(runbase_extra_fields=True, clock=clock) as sim:
        created = await rb_create(session, sim, "a lighthouse at dusk", aspect_ratio="3:2")
        assert created.status == 200
        assert created.headers["Content-Type"].startswith("application/json")
        run = created.json()
        assert re.fullmatch(r"run_[0-9a-f]{16}", run["id"])
        assert run["status"] == "pending"
        assert run["model"] == RB_MODEL
        assert "created_at" in run

        seen: list[str] = []
        for _ in range(500):
            body = (await rb_get(session, sim, run["id"])).json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] == "succeeded":
                break
            clock.advance(0.005)
        assert seen[-1] == "succeeded"
        assert set(seen) <= {"pending", "processing", "succeeded"}
        assert seen == sorted(seen, key=["pending", "processing", "succeeded"].index)
        assert "processing" in seen

        (url,) = body["output"]["urls"]
        image = await request(session, "GET", url)
        assert image.status == 200
        assert image.headers["Content-Type"] == "image/png"
        assert png_size(image.body) == (384, 256)

        record = sim.runs[run["id"]]
        assert record.protocol == "runbase"
        assert record.prompt == "a lighthouse at dusk"
        assert record.key == RB_KEY
        assert record.urls == (url,)
        assert record.first_seen_done_at is not None
        assert record.first_seen_done_at >= record.finishes_at > record.created_at
        assert sim.stats.file_requests == 1


async def test_apiinone_happy_path(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with make(clock=clock) as sim:  # the defaults are the documented shape
        created = await aio_create(session, sim, "a tiny robot", aspect_ratio="2:3", quality="high")
        assert created.status == 200
        body = created.json()
        assert body["code"] == 200
        task_id = body["data"]["task_id"]
        assert re.fullmatch(r"task_[0-9a-f]{16}", task_id)
        assert body["data"]["status"] == "IN_PROGRESS"

        fields = await aio_wait(session, sim, task_id, clock=clock)
        assert fields["status"] == "completed"
        (url,) = fields["output"]["urls"]
        image = await request(session, "GET", url)
        assert image.headers["Content-Type"] == "image/png"
        assert png_size(image.body) == (256, 384)
        assert sim.runs[task_id].quality == "high"
        assert sim.runs[task_id].cost == 28


async def test_images_differ_by_prompt_and_are_cached(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    async with make(images_per_run=3, duration="fixed", duration_median=1.0, clock=clock) as sim:
        ids = [(await rb_create(session, sim, prompt)).json()["id"] for prompt in ("cat", "dog")]
        clock.advance(0.02)
        bodies: dict[str, list[bytes]] = {}
        for run_id in ids:
            urls = (await rb_get(session, sim, run_id)).json()["output"]["urls"]
            assert len(urls) == 3
            bodies[run_id] = [(await request(session, "GET", url)).body for url in urls]
            assert all(png_size(b) == (256, 256) for b in bodies[run_id])
        assert len({b for images in bodies.values() for b in images}) == 6
        again = await request(session, "GET", sim.runs[ids[0]].urls[0])
        assert again.body == bodies[ids[0]][0]
        assert sim.runs[ids[0]].images[0] is sim.runs[ids[0]].images[0]
        missing = sim.runs[ids[0]].urls[0].replace("/0.png", "/7.png")
        assert (await request(session, "GET", missing)).status == 404
        assert (await request(session, "GET", f"{sim.url}/files/run_nope/0.png")).status == 404


async def test_image_not_served_before_the_run_is_done(session: aiohttp.ClientSession) -> None:
    async with make(time_scale=1.0) as sim:
        run_id = (await rb_create(session, sim)).json()["id"]
        answer = await request(session, "GET", f"{sim.url}/files/{run_id}/0.png")
        assert answer.status == 404

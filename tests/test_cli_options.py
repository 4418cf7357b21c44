"""The command line's options and messages: what a user types and reads.

The CLI runs in this process (``run_main``) or, where a process is the point,
as a subprocess; where it must (or must not) reach a server, a real simulator
listens on 127.0.0.1 and its counters are read directly.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from gptimage_async.simulator import Faults, SimulatorConfig
from tests.test_cli import (
    RATE,
    prompt_file,
    run_main,
    simulator_thread,
    start_simulate,
)

# -- batch --dry-run -------------------------------------------------------------------------


def test_dry_run_counts_and_prices_without_a_request(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '"a lamp"\n'
        '{"prompt": "a chair", "quality": "high", "aspect_ratio": "3:2"}\n'
        '{"prompt": "a table", "quality": "high"}\n'
    )
    out = tmp_path / "out"
    with simulator_thread(SimulatorConfig(time_scale=0.01, rate_limit=None, seed=5)) as sim:
        base = sim.base_url("apiinone")
        done = run_main(
            "batch", str(prompts), "--out", str(out), "--provider", "apiinone",
            "--base-url", base, "--dry-run", key=None,
        )  # fmt: skip
    assert done.code == 0, done.stderr
    assert "3 prompts would be sent to apiinone; nothing was sent" in done.stdout
    assert "by quality: high 2, medium 1" in done.stdout
    assert "by aspect ratio: 1:1 2, 3:2 1" in done.stdout
    assert "expected cost: 66 credits (28 per high image, 10 per medium image)" in done.stdout
    assert sim.stats.requests == 0
    assert not out.exists()


def test_dry_run_applies_the_defaults_and_says_when_no_price_is_known(
    tmp_path: Path,
) -> None:
    prompts = prompt_file(tmp_path / "prompts.txt", 4)
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "out"), "--quality", "high",
        "--aspect-ratio", "2:3", "--dry-run", key=None,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert "by quality: high 4" in done.stdout
    assert "by aspect ratio: 2:3 4" in done.stdout
    assert "expected cost: runbase publishes no price per image" in done.stdout


def test_dry_run_refuses_a_bad_file_with_its_line(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"fine"\n{"prompt": "x", "qualty": "high"}\n')
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "o"), "--dry-run")
    assert done.code == 2
    assert "prompts.jsonl:2:" in done.stderr


def test_dry_run_checks_the_providers_own_limits(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("ok prompt\nab\n")  # API in One wants 3-5000 characters
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "o"), "--provider", "apiinone", "--dry-run"
    )
    assert done.code == 2
    assert "prompts.txt:2:" in done.stderr


# -- options and messages ------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["20", "20/", "x/10"])
def test_a_rate_limit_without_its_window_is_refused(rate: str, tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "prompts.txt", 1)
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "o"), "--rate-limit", rate)
    assert done.code == 2
    assert "N/SECONDS" in done.stderr and "20/10" in done.stderr
    done = run_main("simulate", "--rate-limit", rate)
    assert done.code == 2 and "N/SECONDS" in done.stderr


@pytest.mark.parametrize("rate", ["0/10", "20/0", "-5/10"])
def test_an_impossible_rate_limit_says_why(rate: str, tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "prompts.txt", 1)
    done = run_main("batch", str(prompts), "--out", str(tmp_path / "o"), f"--rate-limit={rate}")
    assert done.code == 2
    assert "_client_rate" not in done.stderr  # argparse's fallback names the parser function
    assert "--rate-limit" in done.stderr and "RateLimit" not in done.stderr  # the option's words
    assert "request per window" in done.stderr or "positive number of seconds" in done.stderr


def test_the_missing_key_message_names_the_variable_only(tmp_path: Path) -> None:
    done = run_main("generate", "a lamp", "--provider", "apiinone", key=None)
    assert done.code == 2
    assert "no API key for apiinone: set APIINONE_API_KEY" in done.stderr
    assert "api_key" not in done.stderr


def test_request_timeout_reaches_the_session(tmp_path: Path) -> None:
    # Every answer is held 0.4 s: a 0.2 s request timeout gives up on the create, one of
    # 5 s does not (a loaded machine only holds it longer).
    config = SimulatorConfig(
        time_scale=0.01, rate_limit=None, faults=Faults(slow=1.0, slow_seconds=40.0)
    )
    with simulator_thread(config) as sim:
        base = ["--base-url", sim.base_url("runbase"), "--rate-limit", RATE]
        done = run_main("generate", "a lamp", *base, "--request-timeout", "0.2")
        assert done.code == 1
        assert "UncertainCreateError" in done.stderr
        done = run_main("generate", "a lamp", *base, "--request-timeout", "5")
        assert done.code == 0, done.stderr
    done = run_main("batch", "p.txt", "--out", "o", "--request-timeout", "0")
    assert done.code == 2 and "--request-timeout" in done.stderr


def test_simulate_help_shows_every_default_and_the_fault_names() -> None:
    done = run_main("simulate", "--help", env={"COLUMNS": "200"})
    assert done.code == 0, done.stderr
    text = " ".join(done.stdout.split())
    for default in (
        "(default 127.0.0.1)",
        "(default 8080)",
        "(default 1: real time",
        "(default 20/10, Runbase's)",
        "(default 0)",
        "(default: random)",
    ):
        assert default in text, default
    names = Faults.__struct_fields__
    for name in ("poll_5xx", "create_5xx", "reset", "reset_after_create", "truncated_json"):
        assert name in names and name in text
    assert "create_500_after_effect" in text and "slow" in text


def test_the_readmes_dry_run_example_is_what_the_command_prints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command_line = (
        "$ gptimage-async batch examples/prompts.txt --out out/ --provider apiinone --dry-run"
    )
    block = readme.split(command_line + "\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the README's paths are relative
    done = run_main(*command_line.split()[2:], key=None)
    assert done.code == 0, done.stderr
    assert done.stdout == block


async def test_simulate_verbose_logs_each_request_without_the_key() -> None:
    server, url = await start_simulate("-v")
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.get(
                url + "/runs/run_nope",
                headers={"Authorization": "Bearer sk-never-logged"},
            ) as resp,
        ):
            assert resp.status == 404
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(server.communicate(), 30)
    log = stderr.decode()
    assert "GET /runbase/api/v1/runs/run_nope" in log and " 404 " in log
    assert "sk-never-logged" not in log


@pytest.mark.parametrize("url", ["https://runbase.net/api/v1?x=1", "https://runbase.net/api/v1#a"])
def test_a_base_url_with_a_query_or_fragment_is_refused(url: str, tmp_path: Path) -> None:
    out = tmp_path / "o"
    done = run_main("generate", "a lamp", "--out", str(out), "--base-url", url)
    assert done.code == 2, done.stderr
    assert "query string or fragment" in done.stderr
    assert not out.exists() or not any(out.iterdir())

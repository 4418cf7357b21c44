"""Hosts and servers' ids stay readable in messages; keys of every spelling still do not.

The fresh-user tester's findings: a random-looking but real host (an AWS
Lambda function URL) was hidden as a key, so a user could not see which host
failed; a ULID run id was hidden; a base64 key (``+``, ``/``, ``=``), a
percent-encoded one (``KEY%0A``) and a key in an IPv6 URL's path leaked or
mangled the URL; ``settle`` took a key as a run id; ``simulate`` printed its
keys in its ``config:`` line and refused ``--port -5`` without usage text.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async._batch import prompt_key
from gptimage_async._secrets import NOT_SHOWN, looks_like_key, redact
from gptimage_async.simulator import SimulatorConfig
from gptimage_async.simulator._keys import KeyConfig

from .test_cli import run_main

#: An AWS Lambda function URL's host: 32 random lower-case letters and digits, then a DNS name.
LAMBDA = "r3xkq7mz2vbn5tplw8yd4hcf6gja9seu.lambda-url.us-east-1.on.aws"
KEY = "Zq8Lm3Np7Vx2Kc9Rt4Wy6Hb1Jd5Fg0Sa"
B64 = "Qx7Lm2Np9Rt4+Vw8Zk3Hj6Fd1"

KEPT = [
    f"could not connect to https://{LAMBDA}/api/v1",
    f"could not connect to {LAMBDA}:443 (timed out)",
    "HTTP 502 from https://k7f3m9x2q8w4z1v6b5n0c3lp.execute-api.eu-west-1.amazonaws.com/prod",
    "run run_01HZX3K8M2Q4R5T6V7W8Y9Z0AB failed",
    "task 01ARZ3NDEKTSV4RRFFQ69G5FAV is still pending",
    "GET https://[::1]:8080/runbase/api/v1/runs/run_abc123 failed",
    "could not connect to http://[2001:db8::1]/v1",
    "cannot write out/Spring2026/Catalogue12/v3x/00001-a-lamp.png",
    "no such directory: out/Spring2026/Catalogue12/v3xFinal",
    "cannot write /home/me/out/2026/12/07/run123/img.png",
    "a C++ lamp, 3+4=7 watts, 50% brighter",
    "Batch_2026_Spring_Catalogue_Final_v2 and RUNBASE_API_KEY_OF_THE_SECOND are names",
]


@pytest.mark.parametrize("text", KEPT)
def test_hosts_ulids_and_paths_stay_readable(text: str) -> None:
    assert redact(text) == text
    assert str(gi.APIConnectionError(text)) == text


def test_a_refused_url_names_its_host() -> None:
    lane = gi.Lane("runbase", "sk-right-key-000000", base_url=f"https://{LAMBDA}/api/v1")
    assert LAMBDA in repr(lane)
    with pytest.raises(gi.ConfigurationError) as caught:  # a scheme of no HTTP API
        gi.Lane("runbase", "sk-right-key-000000", base_url=f"ftp://{LAMBDA}/api/v1")
    assert f"ftp://{LAMBDA}/api/v1" in str(caught.value), caught.value


#: (message, what must not be in it once redacted)
HIDDEN = [
    (f"could not connect to ftp://{KEY}", KEY),  # a key pasted as the host
    (f"could not connect to ftp://{KEY.lower()}/v1", KEY.lower()),  # one label: no DNS name
    (f"could not connect to https://{KEY}.example.com/v1", KEY),  # mixed case: no DNS label
    ("could not connect to https://sk-abcdefghij.example.com/v1", "sk-abcdefghij"),
    (f"key_env = {B64!r} is not set", B64),
    (f"token {B64}== refused", B64),
    ("token Qx7Lm2Np9Rt4/Vw8Zk3Hj6Fd1/Ab9 refused", "Qx7Lm2Np9Rt4/Vw8Zk3Hj6Fd1"),
    ("--api-kee Qx7Lm2Np9R-t4Vw8Zk3Hj6_Fd1Ab", "t4Vw8Zk3Hj6"),  # url-safe base64: short runs
    (f"header value {KEY}%0A refused", KEY),
    ("api-key=Qx7Lm2Np9Rt4%2BVw8Zk3Hj6Fd1 refused", "Qx7Lm2Np9Rt4"),
    (f"https://host.example.com/v1/{B64}/runs", B64),
    ("https://[::1]:80/sk-abcdefgh", "sk-abcdefgh"),
]


@pytest.mark.parametrize(("text", "secret"), HIDDEN)
def test_keys_of_every_spelling_are_hidden(text: str, secret: str) -> None:
    for shown in (redact(text), str(gi.ConfigurationError(text))):
        assert secret not in shown and NOT_SHOWN in shown, shown
    assert looks_like_key(text)


def test_an_ipv6_url_keeps_its_port_and_path() -> None:
    assert redact("https://[::1]:80/sk-abcdefgh") == f"https://[::1]:80/{NOT_SHOWN}"
    assert redact("base_url=http://[::1]:8080/v1?k=1.") == "base_url=http://[::1]:8080/v1?..."
    # A server's ids are whatever it answers: those the error carries pass untouched.
    run_id = "Qx7Lm2Np9Rt4Vw8Zk3Hj6Fd1"
    url = f"http://[::1]:8080/runbase/api/v1/runs/{run_id}"
    timeout = gi.RunTimeoutError(f"run {run_id} at {url}: not done", run_id=run_id)
    assert str(timeout) == f"run {run_id} at {url}: not done"
    assert KEY not in str(gi.RunTimeoutError(f"run {run_id}: {KEY}", run_id=run_id))


def _unknown(out: Path) -> Path:
    """A batch's directory whose line 2 has a create of unknown fate."""
    out.mkdir()
    with gi.Journal(out / "journal.jsonl") as journal:
        journal.start(provider="runbase", base_url="http://127.0.0.1:9/runbase/api/v1")
        request = gi.ImageRequest("a lamp")
        journal.intent(prompt_key(request), line=2, request=request)
    return out


def test_settle_refuses_a_run_id_shaped_as_a_key(tmp_path: Path) -> None:
    out = _unknown(tmp_path / "refused")
    done = run_main("settle", str(out), "2", "Qx7Lm2Np9Rt4Vw8Zk3Hj6Fd1")
    assert done.code == 2 and "looks like an API key" in done.stderr, done.stderr
    assert "Qx7Lm2Np9Rt4" not in done.stdout + done.stderr
    with gi.Journal(out / "journal.jsonl") as journal:
        assert [entry.state for entry in journal] == ["intent"]  # nothing was kept
    # Real ids: of one case (base36, a ULID), with a type prefix: recorded.
    for number, run_id in enumerate(
        (
            "zsxwq3l4n5rb6mgq4q5c2dvt6r",
            "01HZX3K8M2Q4R5T6V7W8Y9Z0AB",
            "task_Qx7Lm2Np9Rt4Vw8Zk3Hj6Fd1",
        )
    ):
        out = _unknown(tmp_path / str(number))
        done = run_main("settle", str(out), "2", run_id)
        assert done.code == 0 and f"run {run_id} recorded" in done.stdout, done.stderr
        with gi.Journal(out / "journal.jsonl") as journal:
            assert [entry.run_id for entry in journal] == [run_id]


@pytest.mark.parametrize("port", ["-5", "65536", "http"])
def test_simulate_refuses_a_port_out_of_range_as_a_usage_error(port: str) -> None:
    done = run_main("simulate", "--port", port, key=None)
    assert done.code == 2
    assert "usage: gptimage-async simulate" in done.stderr, done.stderr
    assert "gptimage-async simulate: error: argument --port" in done.stderr, done.stderr


def test_the_simulators_config_line_masks_its_keys() -> None:
    from gptimage_async.simulator._config import masked_key
    from gptimage_async.simulator._simulator import _serve

    keys = ["sk-CANARYrb7Q2x9Lm4Kp8Zt3", "aio_CANARYai5W1y6Hb2Jd7Fg0", "sk-a", "sk-b"]
    config = SimulatorConfig(
        keys={keys[0]: KeyConfig(quota=4), keys[2]: KeyConfig(), keys[3]: KeyConfig()},
        api_keys=frozenset(keys),
        blocked_keys=frozenset({keys[1]}),
    )

    async def printed() -> str:
        # What ``simulate`` prints once its port is bound, up to its config line.
        out, seen = io.StringIO(), asyncio.Event()

        class Out(io.StringIO):
            def write(self, text: str) -> int:
                out.write(text)
                if "config:" in text:
                    seen.set()
                return len(text)

        with contextlib.redirect_stdout(Out()):
            serving = asyncio.create_task(_serve("127.0.0.1", 0, config))
            await asyncio.wait_for(seen.wait(), 10)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        return out.getvalue()

    line = next(line for line in asyncio.run(printed()).splitlines() if "config:" in line)
    for key in keys:
        assert key not in line, line
    assert '"sk-...8Zt3"' in line and '"aio_...7Fg0"' in line, line
    assert '"sk-..."' in line and '"sk-...#2"' in line, line  # two short keys kept apart
    assert '"quota":4' in line, line
    assert masked_key("sk-test") == "sk-..."

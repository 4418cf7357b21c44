"""Small things a new user hit on the command line (issue 20, items 6, 16 and 19).

``--out`` checked before anything is paid for, the simulator's short-lived
URLs said, ``--dry-run`` counting only what a real run would send, prompts
from standard input, CSV headers with a trailing comma, case-blind quality.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import gptimage_async as gi
from gptimage_async.simulator import Simulator, SimulatorConfig

from .test_cli import (
    KEY,
    RATE,
    command,
    environment,
    prompt_file,
    run_main,
    simulator_thread,
)

FAST = SimulatorConfig(time_scale=0.01, rate_limit=None, seed=4)


def against(sim: Simulator) -> list[str]:
    return ["--provider", "runbase", "--base-url", sim.base_url("runbase"), "--rate-limit", RATE]


# -- --out is checked before any create --------------------------------------------------


@pytest.mark.parametrize("command_name", ["generate", "batch"])
def test_an_out_that_is_a_file_is_not_a_directory(tmp_path: Path, command_name: str) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    what = "a lamp" if command_name == "generate" else str(prompt_file(tmp_path / "p.txt", 2))
    with simulator_thread(FAST) as sim:
        done = run_main(command_name, what, "--out", str(a_file), *against(sim))
        assert done.code == 2, done.stderr
        assert "not a directory" in done.stderr and "File exists" not in done.stderr
        assert sim.stats.create_requests == 0
        # Below a file: the OS's own words, still before anything is sent.
        done = run_main(command_name, what, "--out", str(a_file / "sub"), *against(sim))
        assert done.code == 2 and "Not a directory" in done.stderr, done.stderr
        assert sim.stats.create_requests == 0


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="gptimage-ro-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


def test_generate_into_a_read_only_directory_pays_nothing(read_only_dir: Path) -> None:
    with simulator_thread(FAST) as sim:
        done = run_main("generate", "a lamp", "--out", str(read_only_dir), *against(sim))
        assert done.code == 2, done.stderr
        assert f"cannot write to {read_only_dir}" in done.stderr
        assert "Read-only file system" in done.stderr
        assert sim.stats.create_requests == 0


def test_generate_with_the_simulator_says_its_urls_end_with_the_command(
    tmp_path: Path,
) -> None:
    # In this process (run_main): what is printed is the point, not the process's signals
    # or exit; the command still starts its own simulator on 127.0.0.1 and ends it.
    done = run_main("generate", "a lamp", "--provider", "simulator", key=None)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("http://127.0.0.1:")
    assert "stop working when it ends" in done.stderr and "--out DIR" in done.stderr
    out = tmp_path / "o"
    done = run_main("generate", "a lamp", "--provider", "simulator", "--out", str(out))
    assert done.code == 0, done.stderr
    assert "stop working" not in done.stderr
    assert len(list(out.glob("*.png"))) == 1


# -- --dry-run counts what a real run would send --------------------------------------------


def test_dry_run_counts_only_the_prompts_a_real_run_would_send(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with simulator_thread(FAST) as sim:
        first = prompt_file(tmp_path / "first.txt", 5)
        done = run_main("batch", str(first), "--out", str(out), *against(sim))
        assert done.code == 0, done.stderr
        more = prompt_file(tmp_path / "more.txt", 8)  # the same 5, and 3 new
        creates = sim.stats.create_requests

        done = run_main("batch", str(more), "--out", str(out), *against(sim), "--dry-run")
        assert done.code == 0, done.stderr
        assert "dry run: 3 of 8 prompts would be sent" in done.stdout
        assert "5 already done" in done.stdout

        # Priced: the cost is of the 3, not of the 8.
        done = run_main(
            "batch", str(more), "--out", str(out), "--provider", "apiinone", "--dry-run"
        )
        assert done.code == 0, done.stderr
        assert "expected cost: 30 credits" in done.stdout, done.stdout

        # An image deleted is fetched again through its run, not bought again.
        next(out.glob("*.png")).unlink()
        done = run_main("batch", str(more), "--out", str(out), *against(sim), "--dry-run")
        assert "dry run: 3 of 8" in done.stdout and "1 earlier runs" in done.stdout, done.stdout
        assert sim.stats.create_requests == creates  # a dry run sends nothing

        done = run_main("batch", str(more), "--out", str(out), *against(sim))
        assert done.code == 0 and "this run: 3 creates sent" in done.stdout, done.stdout


# -- prompts: stdin, CSV headers, case ------------------------------------------------------


async def stdin_cli(text: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *command(*args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(RUNBASE_API_KEY=KEY),
    )
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def test_prompts_from_standard_input(tmp_path: Path) -> None:
    # Dry runs, in this process (run_main); a real run reads a pipe in the test below.
    dry = ["--out", str(tmp_path / "o"), "--provider", "apiinone", "--dry-run"]
    done = run_main("batch", "-", *dry, stdin="a lamp\n\n# not this\nan owl\n")
    assert done.code == 0, done.stderr
    assert "2 of 2 prompts" in done.stdout
    csv_text = "Prompt,Quality,\na lamp,HIGH,\nan owl,,\n"
    done = run_main("batch", "-", "--format", "csv", *dry, stdin=csv_text)
    assert done.code == 0, done.stderr
    assert "by quality: high 1, medium 1" in done.stdout
    done = run_main("batch", "-", "--format", "jsonl", *dry, stdin='{"prompt": 3}\n')
    assert done.code == 2 and "<stdin>:1:" in done.stderr, done.stderr


async def test_prompts_from_standard_input_for_real(tmp_path: Path) -> None:
    # A real process reading its standard input from a pipe, against the simulator.
    async with Simulator(FAST) as sim:
        out_dir = tmp_path / "real"
        code, out, err = await stdin_cli(
            "a lamp\nan owl\n", "batch", "-", "--out", str(out_dir), *against(sim)
        )
        assert code == 0, err
        assert sim.stats.creates == 2
        assert [e.input.prompt for e in gi.read_manifest(out_dir / "manifest.jsonl")] == [
            "a lamp",
            "an owl",
        ]


def test_a_csv_header_with_a_trailing_comma_and_case_blind_values(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prompt,quality,aspect_ratio,\na lamp,HIGH,3:2,\nan owl,Medium,,\n")
    prompts = gi.read_prompts(path)
    assert [(p.request.prompt, p.request.quality, p.request.aspect_ratio) for p in prompts] == [
        ("a lamp", "high", "3:2"),
        ("an owl", "medium", None),
    ]
    # A value under the unnamed column is refused, not dropped.
    path.write_text("prompt,quality,\na lamp,high,oops\n")
    with pytest.raises(gi.PromptFileError, match=r"p\.csv:2: a value in a column whose header"):
        gi.read_prompts(path)
    # Two unnamed columns are still fine; a real unknown one is still refused.
    path.write_text("prompt,,\na lamp,,\n")
    assert len(gi.read_prompts(path)) == 1
    path.write_text("prompt,qualty\na lamp,high\n")
    with pytest.raises(gi.PromptFileError, match="unknown column 'qualty'"):
        gi.read_prompts(path)


def test_quality_is_case_blind_on_the_command_line(tmp_path: Path) -> None:
    prompts = prompt_file(tmp_path / "p.txt", 2)
    done = run_main(
        "batch", str(prompts), "--out", str(tmp_path / "o"), "--provider", "apiinone",
        "--quality", "HIGH", "--dry-run",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert "by quality: high 2" in done.stdout and "expected cost: 56 credits" in done.stdout


def test_a_run_status_prints_as_its_word() -> None:
    # The README's "print(run.id, run.status)  # provider's id, pending".
    assert str(gi.RunStatus.PENDING) == f"{gi.RunStatus.PENDING}" == "pending"

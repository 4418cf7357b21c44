"""The live progress display on a real pseudo-terminal.

The CLI runs as a subprocess whose stderr is the slave side of a pty set to
a given size, stdout a pipe (redirected, as in ``... > urls.txt``) and stdin
not a terminal. What it writes to the pty is replayed on a small screen
model (carriage return, line feed, erase line, cursor up) so a test can ask
what a user would see at the end, and whether the status line ever scrolled.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Callable
from pathlib import Path

from tests.test_cli import command, environment, prompt_file

STATUS = re.compile(r"\d+/\d+ +(ETA|stopping)")
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def screen(output: str, columns: int) -> list[str]:
    """The lines a terminal of ``columns`` shows after ``output`` (colours dropped)."""
    lines: list[str] = [""]
    row = col = 0
    i = 0
    while i < len(output):
        ch = output[i]
        match = CSI.match(output, i) if ch == "\x1b" else None
        if match:
            arg, code = match.groups()
            if code == "K":  # erase in line: 2 the whole line, otherwise from the cursor on
                lines[row] = "" if arg == "2" else lines[row][:col]
            elif code == "A":
                row = max(0, row - int(arg or 1))
            i = match.end()
            continue
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif ch >= " ":
            if col >= columns:  # the terminal wraps
                row += 1
                col = 0
                if row == len(lines):
                    lines.append("")
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1 :]
            col += 1
    return lines


class Pty:
    """A pseudo-terminal of a given size whose output is collected by a thread."""

    def __init__(self, columns: int, rows: int = 24) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.columns = columns
        self.chunks: list[bytes] = []
        self.ended = False
        # Told of each chunk (and of the end): a test waits for what the screen shows.
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._drain)
        self.reader.start()

    def _drain(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO once the child closed the terminal
                    return
                if not data:
                    return
                with self.changed:
                    self.chunks.append(data)
                    self.changed.notify_all()
        finally:
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def wait_until(self, shows: Callable[[list[str]], bool], timeout: float) -> bool:
        """Block until ``shows(screen lines)`` holds, checked as each chunk arrives.

        ``False`` if the terminal closed first or after ``timeout`` seconds.
        """

        def holds() -> bool:
            text = b"".join(self.chunks).decode(errors="replace")
            return self.ended or shows(screen(text, self.columns))

        with self.changed:
            return self.changed.wait_for(holds, timeout) and not self.ended

    def close(self) -> str:
        os.close(self.slave)
        self.reader.join(10)
        os.close(self.master)
        return b"".join(self.chunks).decode()


def run_on_terminal(
    term: Pty, *args: str, interrupt_when: Callable[[list[str]], bool] | None = None
) -> tuple[int, str, str]:
    """Run the CLI with stderr on ``term``; with ``interrupt_when``, send it SIGINT once a
    run exists and ``interrupt_when(screen lines)`` holds (checked as the screen changes)."""
    proc = subprocess.Popen(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=term.slave,
        env=environment(),
    )
    if interrupt_when is not None:
        # Once a run exists (its "created" record is journaled) and the screen shows
        # what the test asks, not after a fixed time: a loaded machine can take
        # seconds to start Python, before any handler is set. The live line is
        # redrawn every LIVE_INTERVAL, so the journal is looked at again then.
        journal = Path(args[args.index("--out") + 1]) / "journal.jsonl"

        def ready(lines: list[str]) -> bool:
            created = journal.is_file() and b'"created"' in journal.read_bytes()
            return created and interrupt_when(lines)

        assert term.wait_until(ready, 60), "the batch never showed its live line"
        proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=90)
    return proc.returncode, stdout.decode(), term.close()


def simulator_batch(tmp_path: Path, n: int, time_scale: str = "0.01") -> list[str]:
    prompts = prompt_file(tmp_path / "prompts.txt", n)
    out = tmp_path / "out"
    return ["batch", str(prompts), "--out", str(out), "--provider", "simulator",
            "--time-scale", time_scale]  # fmt: skip


def test_70_columns_with_stdout_redirected_show_one_live_line(tmp_path: Path) -> None:
    term = Pty(columns=70)
    code, stdout, output = run_on_terminal(term, *simulator_batch(tmp_path, 40))
    assert code == 0, output
    assert "40 prompts: 40 succeeded" in stdout
    assert "\x1b[" not in stdout  # the redirected stdout gets plain text
    lines = screen(output, 70)
    status = [line for line in lines if STATUS.search(line)]
    assert len(status) == 1, lines  # redrawn in place: no scroll of copies
    assert "40/40" in status[0] and "ETA" in status[0] and "429s" in status[0]
    # The bar gives up its width before the counts do: the throughput still shows.
    assert status[0].rstrip().endswith("/s"), status[0]
    assert all(len(line) <= 70 for line in lines)
    # Never taller than one line, so rich never had to move the cursor up.
    assert "\x1b[1A" not in output and "\x1b[A" not in output
    # Redrawn many times, each time from the start of the line.
    assert output.count("\r") >= 3


def test_80_columns_keep_the_eta_and_the_429_count(tmp_path: Path) -> None:
    term = Pty(columns=80)
    code, _, output = run_on_terminal(term, *simulator_batch(tmp_path, 10))
    assert code == 0, output
    (status,) = [line for line in screen(output, 80) if STATUS.search(line)]
    assert re.search(r"10/10 +ETA \S+ +ok 10 +failed 0 +in flight 0 +429s \d+", status), status


def test_log_lines_go_above_the_live_line_not_into_it(tmp_path: Path) -> None:
    term = Pty(columns=100)
    code, _, output = run_on_terminal(term, "-v", *simulator_batch(tmp_path, 5))
    assert code == 0, output
    lines = screen(output, 100)
    logged = [line for line in lines if "POST /runs" in line]
    assert logged, lines
    assert not any(STATUS.search(line) for line in logged)
    assert len([line for line in lines if STATUS.search(line)]) == 1


def shows_an_eta(lines: list[str]) -> bool:
    return any(STATUS.search(line) and "ETA" in line for line in lines)


def test_after_ctrl_c_no_eta_is_shown(tmp_path: Path) -> None:
    term = Pty(columns=100)
    # Real time: 3-10 s runs, so the batch is mid-way when interrupted.
    args = simulator_batch(tmp_path, 30, time_scale="1")
    # Interrupted once the live line shows an ETA: it must be gone after the Ctrl-C.
    code, _, output = run_on_terminal(term, *args, interrupt_when=shows_an_eta)
    assert code == 130, output
    lines = screen(output, 100)
    (status,) = [line for line in lines if STATUS.search(line)]
    assert "stopping" in status and "ETA" not in status
    assert any("interrupt: stopping" in line for line in lines)

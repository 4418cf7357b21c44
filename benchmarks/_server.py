"""A simulator in a child process, so its CPU and memory stay out of the client's figures.

``python -m benchmarks._server CONFIG_JSON`` serves until SIGINT and prints
the base URLs once the port is bound; :class:`ServerProcess` starts it and
reads them.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from types import TracebackType

import msgspec

from gptimage_async.simulator import SimulatorConfig, serve_forever

__all__ = ["ServerProcess"]

#: Seconds the child gets to bind its port, and to exit on SIGINT.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


class ServerProcess:
    """``with ServerProcess(config) as base_url:`` a Runbase simulator in its own process."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._config = config
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self._proc = proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server", msgspec.json.encode(self._config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:  # "Runbase:    http://127.0.0.1:PORT/runbase/api/v1"
            if line.startswith("Runbase:"):
                return line.split()[-1]
        self.__exit__(None, None, None)
        raise RuntimeError("the simulator process exited before printing its URL")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    config = msgspec.json.decode(sys.argv[1], type=SimulatorConfig)
    with contextlib.suppress(BrokenPipeError):
        serve_forever(port=0, config=config)


if __name__ == "__main__":
    main()

"""What a process pays at start: heavy modules stay out until a path needs them.

Every ``gptimage-async`` command, every fleet worker and every script imports
the package first; a module imported there is paid by each of them. The
simulator's server (aiohttp.web), rich (the live terminal line), the batch
engine and the blocking API load on the paths that use them only
(``gptimage_async.__getattr__``, ``simulator.__getattr__``, ``_cli._main``,
``_progress.make_display``). One fresh interpreter checks them all in turn.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import io, json, sys

HEAVY = (
    "aiohttp.web", "rich", "gptimage_async.simulator._simulator", "gptimage_async._batch",
    "gptimage_async._sync", "gptimage_async._gallery", "gptimage_async._pool_session",
)
def loaded():
    return sorted(name for name in HEAVY if name in sys.modules)

seen = {}
import gptimage_async
seen["library"] = loaded()
from gptimage_async._cli._args import parser
parser().format_help()
seen["cli start"] = loaded()
from gptimage_async._progress import make_display
make_display(io.StringIO())
seen["batch log lines"] = loaded()
make_display(io.StringIO(), live=True)
seen["live line"] = loaded()
gptimage_async.Batch, gptimage_async.SyncSession
from gptimage_async.simulator import Simulator
seen["all used"] = loaded()
print(json.dumps(seen))
"""


def test_heavy_modules_load_only_on_the_paths_that_use_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["library"] == []
    # The parser knows every command (batch's defaults, gallery, simulate's options)
    # without their engines: only the batch module itself, for its size default.
    assert seen["cli start"] == ["gptimage_async._batch", "gptimage_async._gallery"]
    assert seen["batch log lines"] == seen["cli start"]
    assert "rich" in seen["live line"]
    assert "aiohttp.web" not in seen["live line"]
    # The lazy names are the real ones: using them loads their modules.
    assert {"aiohttp.web", "gptimage_async._sync", "gptimage_async.simulator._simulator"} <= set(
        seen["all used"]
    )

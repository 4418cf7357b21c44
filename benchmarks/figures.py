"""Pictures of the key figures for RESULTS.md, as SVG files next to it.

Drawn with matplotlib, from the ``benchmarks`` extra
(``pip install -e '.[benchmarks]'``); never a dependency of the package.
Without it the benchmark still writes RESULTS.md, and says how to get the
pictures. Every figure is drawn from what the scenarios measured:

- *requests per window*: over the default-limit bulk job, the requests the
  server received in the last rate window (sliding), ours against the
  hand-written client, with the limit drawn in;
- *polls per run*: mean status requests per result, by client and workload;
- *detection delay*: its distribution (from the run finishing on the server
  to the caller holding the result), in real seconds, by client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .scenarios import Bulk

if TYPE_CHECKING:
    from .results import Results

__all__ = ["FIGURES_DIR", "Figure", "draw", "requests_per_window"]

#: Where the pictures go, next to RESULTS.md.
FIGURES_DIR = "figures"
#: One colour per client (by name prefix, first match), the same in every figure.
COLOURS = (
    ("gptimage-async", "#1f6feb"),
    ("hand-written, gather", "#d1242f"),
    ("hand-written, semaphore", "#bf8700"),
    ("hand-written", "#8250df"),  # one run at a time: neither gather nor a semaphore
)
_OTHER = "#6e7781"


@dataclass(frozen=True, slots=True)
class Figure:
    """One picture: its alt text / caption and its path relative to RESULTS.md."""

    title: str
    path: str


def requests_per_window(
    load: Sequence[tuple[float, int]], window: float
) -> list[tuple[float, int]]:
    """(time, requests in the window ending then) from cumulative (time, requests) samples."""
    out = []
    start = 0
    for t, count in load:
        while start + 1 < len(load) and load[start + 1][0] <= t - window:
            start += 1
        earlier = load[start][1] if load[start][0] <= t - window else 0
        out.append((t, count - earlier))
    return out


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: small, diffable files
            "svg.hashsalt": "gptimage-async",  # ids the same from run to run
            "font.size": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
        }
    )
    return plt


def _colour(client: str) -> str:
    return next((colour for prefix, colour in COLOURS if client.startswith(prefix)), _OTHER)


def _bulk_rows(results: Results, default_limit: int) -> list[Bulk]:
    return [
        b
        for b in results.bulk
        if b.real_limit == default_limit and not b.counted and b.belief in ("stated", "-")
    ]


def draw(results: Results, out_dir: Path, *, default_limit: int, window: float) -> list[Figure]:
    """Draw every figure the results allow into ``out_dir/figures``; ``[]`` without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return []
    where = out_dir / FIGURES_DIR
    where.mkdir(parents=True, exist_ok=True)
    scale = results.settings.time_scale
    drawn: list[Figure] = []
    metadata = {"Date": None, "Creator": "python -m benchmarks"}

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(where / name, format="svg", metadata=metadata, bbox_inches="tight")
        plt.close(fig)
        drawn.append(Figure(title, f"{FIGURES_DIR}/{name}"))

    bulk = [b for b in _bulk_rows(results, default_limit) if b.load]
    if bulk:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        for b in bulk:
            series = requests_per_window(b.load, window * scale)
            ax.plot(
                [t / scale for t, _ in series],
                [n for _, n in series],
                label=b.client,
                color=_colour(b.client),
                linewidth=1.6 if b.client == "gptimage-async" else 1.2,
                zorder=3 if b.client == "gptimage-async" else 2,
            )
        ax.axhline(default_limit, color="#57606a", linestyle="--", linewidth=0.8, zorder=1)
        ax.annotate(
            f"limit: {default_limit} per {window:g} s",
            (0, default_limit),
            xytext=(4, 4),
            textcoords="offset points",
        )
        ax.set_xlabel("seconds since the job started (real time)")
        ax.set_ylabel(f"requests in the last {window:g} s\n(429s included)")
        ax.set_title(f"Requests per window over a bulk job of {bulk[0].runs} runs")
        ax.legend(loc="lower center", ncols=3, frameon=False, bbox_to_anchor=(0.5, -0.42))
        save(fig, "requests-per-window.svg", "Requests per rate window over a bulk job")

    groups: list[tuple[str, list[tuple[str, float]]]] = []
    if bulk:
        groups.append(("bulk", [(b.client, b.polls / b.succeeded) for b in bulk if b.succeeded]))
    if results.idle:
        groups.append(
            ("single runs", [(i.client, i.polls / i.runs) for i in results.idle if i.runs])
        )
    if groups:
        fig, ax = plt.subplots(figsize=(7.5, 3.2))
        clients = list(dict.fromkeys(client for _, rows in groups for client, _ in rows))
        width = 0.8 / len(clients)
        for g, (_, rows) in enumerate(groups):
            values = dict(rows)
            for c, client in enumerate(clients):
                if client not in values:
                    continue
                x = g + (c - (len(clients) - 1) / 2) * width
                bar = ax.bar(x, values[client], width * 0.9, color=_colour(client))
                ax.bar_label(bar, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(groups)), [name for name, _ in groups])
        ax.set_ylabel("polls per result")
        ax.set_title("Status requests per run")
        handles = [plt.Rectangle((0, 0), 1, 1, color=_colour(c)) for c in clients]
        ax.legend(handles, clients, frameon=False, loc="upper left")
        save(fig, "polls-per-run.svg", "Polls per run, by client and workload")

    delays: list[tuple[str, str, list[float]]] = [
        (b.client, "bulk", b.delays) for b in bulk if b.delays
    ]
    delays += [(i.client, "single runs", i.delays) for i in results.idle if i.delays]
    if delays:
        fig, ax = plt.subplots(figsize=(8.5, 3.4))
        for client, workload, values in delays:
            real = sorted(max(v, 0.0) / scale for v in values if not math.isnan(v))
            if not real:
                continue
            share = [(k + 1) / len(real) for k in range(len(real))]
            ax.step(
                real,
                share,
                where="post",
                color=_colour(client),
                linestyle="-" if workload == "bulk" else ":",
                label=f"{client} ({workload})",
            )
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("detection delay, real seconds (log scale above 0.1 s)")
        ax.set_ylabel("share of runs")
        ax.set_title("How long after a run finishes its caller knows")
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save(fig, "detection-delay.svg", "Detection delay, distribution by client")
    return drawn

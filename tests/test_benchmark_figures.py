"""The benchmark's pictures: drawn from what the scenarios measured, shown by RESULTS.md.

Synthetic rows, no benchmark run: these check the drawing, not the figures.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks.figures import draw, requests_per_window
from benchmarks.report import Results, Settings, render
from benchmarks.scenarios import Bulk, Idle


def test_requests_per_window_slides_over_cumulative_samples() -> None:
    # 2 requests a second for 10 s, sampled each second; a 4 s window holds 8.
    load = [(float(t), 2 * t) for t in range(11)]
    assert requests_per_window(load, 4.0) == [
        (0.0, 0),
        (1.0, 2),
        (2.0, 4),
        (3.0, 6),
        (4.0, 8),
        (5.0, 8),
        (6.0, 8),
        (7.0, 8),
        (8.0, 8),
        (9.0, 8),
        (10.0, 8),
    ]


def results() -> Results:
    ours = Bulk("gptimage-async", "stated", 20, False, 10, rate=40.0, succeeded=10, polls=11)
    ours.load = [(t / 100, int(t * 0.4)) for t in range(60)]
    ours.delays = [0.01 * k for k in range(10)]
    theirs = Bulk("hand-written, gather", "-", 20, False, 10, rate=40.0, succeeded=8, polls=90)
    theirs.load = [(t / 100, 3 * t) for t in range(50)]
    theirs.delays = [0.02 * k for k in range(8)]
    idle = Idle("hand-written", 3, polls=20, delays=[0.01, 0.02, 0.03])
    settings = Settings(time_scale=0.05, runs=10, baseline_cap=1.0, cpu_concurrency=32, argv="")
    return Results(settings=settings, bulk=[ours, theirs], idle=[idle])


def test_the_figures_are_drawn_and_shown_in_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the pictures need the benchmarks extra")
    figures = draw(results(), tmp_path, default_limit=20, window=10.0)
    assert [f.path for f in figures] == [
        "figures/requests-per-window.svg",
        "figures/polls-per-run.svg",
        "figures/detection-delay.svg",
    ]
    for figure in figures:
        svg = ET.parse(tmp_path / figure.path).getroot()
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        text = (tmp_path / figure.path).read_text()
        assert "gptimage-async" in text and "hand-written" in text  # fonts stay text
    text = render(results(), default_limit=20, window=10.0, figures=figures)
    assert "## Figures" in text
    assert "![Requests per rate window over a bulk job](figures/requests-per-window.svg)" in text


def test_the_gallery_benchmark_measures_a_page_of_real_entries() -> None:
    from benchmarks.gallery import ROUNDS, measure, section

    row = measure(300)
    assert len(row.render) == len(row.write) == ROUNDS
    # One tile per entry, each about half a kilobyte: the size is counted from the page.
    assert 300 * 300 < row.bytes < 300 * 1500
    text = "\n".join(section(row))
    assert "## Gallery page at 300 images" in text and "B per image" in text

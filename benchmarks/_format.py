"""Formatting for RESULTS.md: percentages, milliseconds, Markdown tables, row labels."""

from __future__ import annotations

from collections.abc import Iterable

from .scenarios import Bulk, Cpu, Idle, Steady

__all__ = ["done", "efficiency_text", "is_ours", "limit_label", "ms", "pct", "table"]


def pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%"


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def limit_label(row: Bulk, default: int) -> str:
    if row.real_limit == default:
        return f"{row.real_limit}/window (default)"
    factor = "2x higher" if row.real_limit > default else "2x lower"
    return f"{row.real_limit}/window ({factor})"


def done(row: Bulk) -> str:
    text = f"{row.succeeded}/{row.runs}"
    if row.failed:
        text += f", {row.failed} gave up"
    if row.capped:
        text += ", cut off"
    return text


def is_ours(row: Bulk | Idle | Cpu | Steady) -> bool:
    return row.client == "gptimage-async"


def efficiency_text(row: Bulk) -> str:
    """Efficiency, with a dagger when the job did not deliver every result."""
    return f"{row.efficiency:.2f}" + ("" if row.succeeded == row.runs else "\u2020")

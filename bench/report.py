"""Markdown helpers shared by the CPU (run.py) and GPU (gpu.py) reports."""

from __future__ import annotations


def table(header: str, align: str, rows) -> list[str]:
    """A Markdown table: header cells split on '|', align one 'l' or 'r' per column."""
    sep = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return [f"| {header} |", sep] + [f"| {' | '.join(row)} |" for row in rows]


def ratio(r: dict, key: str, base: str, digits: int = 1) -> str:
    """r[key] / r[base] as 'N.Nx', or '-' when the run has no r[key] (an optional competitor)."""
    return f"{r[key] / r[base]:.{digits}f}x" if key in r else "-"

"""The scaling curves of a `make bench` run, as PNG files beside its results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here, nor on CI
import matplotlib.pyplot as plt


def draw(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the history curve (claim, listing and health-figure latency against jobs in the table) and the sensor's
    against its backlog into `folder`; the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    commit = summary["commit"][:12]
    history, backlog = summary["curve_history"], summary["curve_sensor_backlog"]
    return [
        _curve(
            folder / "curve_history.png",
            history,
            x="jobs",
            series=(
                ("claim_p50_ms", "claim p50 (16 connections)", "o-"),
                ("claim_p99_ms", "claim p99", "o--"),
                ("list_claimable_p99_ms", "GET /jobs?claimable=true p99 (4 connections)", "s-"),
                ("runtime_status_ms", "health figures (runtime_status), one read", "d:"),
            ),
            xlabel="jobs in the table (1,000 claimable behind the rest)",
            ylabel="ms",
            title=f"Claim and claimable listing against history ({commit})",
            goal=(50, "listing goal: p99 50 ms"),
        ),
        _curve(
            folder / "curve_sensor_backlog.png",
            backlog,
            x="backlog",
            series=(
                ("median_tick_s", "median tick that made jobs", "o-"),
                ("max_tick_s", "longest tick", "o--"),
                ("all_jobs_claimable_s", "landing to all jobs claimable", "s-"),
            ),
            xlabel="data resources landing in one transaction",
            ylabel="s",
            title=f"The data resources sensor against a backlog ({commit})",
        ),
    ]


def _curve(
    path: Path,
    points: list[dict[str, Any]],
    *,
    x: str,
    series: tuple[tuple[str, str, str], ...],
    xlabel: str,
    ylabel: str,
    title: str,
    goal: tuple[float, str] | None = None,
) -> Path:
    """One PNG: each of `series` (key, label, style) against `x`, on a log scale; a missing value as 0."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    xs = [point[x] for point in points]
    for key, label, style in series:
        axes.plot(xs, [point.get(key) or 0 for point in points], style, label=label)
    if goal is not None:
        axes.axhline(goal[0], color="grey", linewidth=0.8, linestyle=":", label=goal[1])
    axes.set_xscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

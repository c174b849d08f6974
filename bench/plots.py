"""The scaling curves of a `make bench` run, as PNG files beside its results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display here, nor on CI
import matplotlib.pyplot as plt


def draw(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Draw the history curve (claim and listing latency against jobs in the table) and the sensor's
    against its backlog into `folder`; the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    commit = summary["commit"][:12]
    written = []

    history = summary["curve_history"]
    jobs = [point["jobs"] for point in history]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for key, label, style in (
        ("claim_p50_ms", "claim p50 (16 connections)", "o-"),
        ("claim_p99_ms", "claim p99", "o--"),
        ("list_claimable_p99_ms", "GET /jobs?claimable=true p99 (4 connections)", "s-"),
    ):
        axes.plot(jobs, [point[key] for point in history], style, label=label)
    axes.axhline(50, color="grey", linewidth=0.8, linestyle=":", label="listing goal: p99 50 ms")
    axes.set_xscale("log")
    axes.set_xlabel("jobs in the table (1,000 claimable behind the rest)")
    axes.set_ylabel("ms")
    axes.set_ylim(bottom=0)
    axes.set_title(f"Claim and claimable listing against history ({commit})")
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    written.append(_save(figure, folder / "curve_history.png"))

    backlog = summary["curve_sensor_backlog"]
    sizes = [point["backlog"] for point in backlog]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for key, label, style in (
        ("median_tick_s", "median tick that made jobs", "o-"),
        ("max_tick_s", "longest tick", "o--"),
        ("all_jobs_claimable_s", "landing to all jobs claimable", "s-"),
    ):
        axes.plot(sizes, [point[key] or 0 for point in backlog], style, label=label)
    axes.set_xscale("log")
    axes.set_xlabel("data resources landing in one transaction")
    axes.set_ylabel("s")
    axes.set_ylim(bottom=0)
    axes.set_title(f"The data resources sensor against a backlog ({commit})")
    axes.legend(fontsize=8)
    axes.grid(True, alpha=0.3)
    written.append(_save(figure, folder / "curve_sensor_backlog.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

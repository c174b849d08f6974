"""Column statistics of tab- or comma-separated tables: a small, real workflow step for `nmdc-site run`.

    python -m nmdc_site.examples.stats INPUT...

For each input, writes `<name>.stats.json` to $NMDC_OUTPUT_DIR (the current folder when unset): per numeric
column its count, mean, standard deviation, min, median and max. Reports progress through
$NMDC_PROGRESS_FILE. $STATS_DELAY (seconds, default 0) slows it down per input, to watch it run.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path


def column_stats(path: Path) -> dict:
    """Statistics of each numeric column of a table with a header row."""
    with path.open(newline="") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters="\t,") if sample else csv.excel_tab
        rows = list(csv.reader(handle, dialect))
    if not rows:
        return {"rows": 0, "columns": {}}
    header, body = rows[0], rows[1:]
    columns = {}
    for index, name in enumerate(header):
        values = []
        for row in body:
            try:
                values.append(float(row[index]))
            except (IndexError, ValueError):
                continue
        if values:
            columns[name] = {
                "count": len(values),
                "mean": statistics.fmean(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
            }
    return {"rows": len(body), "columns": columns}


def report(percent: float, message: str) -> None:
    progress = os.environ.get("NMDC_PROGRESS_FILE")
    if progress:
        with open(progress, "a") as handle:
            handle.write(f"{percent:.0f} {message}\n")


def main(argv: list[str]) -> int:
    inputs = [Path(p) for p in argv] or [Path(p) for p in json.loads(os.environ.get("NMDC_INPUTS", "[]"))]
    if not inputs:
        print("usage: stats INPUT...", file=sys.stderr)
        return 2
    out_dir = Path(os.environ.get("NMDC_OUTPUT_DIR", "."))
    delay = float(os.environ.get("STATS_DELAY", "0"))
    for number, path in enumerate(inputs, start=1):
        report(100 * (number - 1) / len(inputs), f"reading {path.name}")
        time.sleep(delay)
        result = {"input": path.name, **column_stats(path)}
        target = out_dir / f"{path.name}.stats.json"
        # Written under a .tmp name, then renamed: the agent never publishes half a file.
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.rename(target)
        print(
            f"{path.name}: {result['rows']} rows, {len(result['columns'])} numeric columns -> {target.name}"
        )
    report(100, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""`nmdc-site watch`: a monitoring site. Follow the operations on the site's data resources, print changes.

Each round lists the site's data resources (or the ones named), then the operations on each
(`GET /operations?data_resource_id=...`), and prints an operation when it is new or its state, progress,
message, cancel or pause flag changed. When an operation is seen done, its execution is printed
(`GET /jobs/{job_id}/executions/{exec_id}`) — a summary line and its outputs, or in full with `--json` —
or its error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nmdc_site.client import Execution, NmdcClient, NotFound, Operation

log = logging.getLogger("nmdc_site.watch")


def _signature(op: Operation) -> tuple[Any, ...]:
    m = op.metadata
    return (op.done, m.state, m.progress, m.message, m.cancel_requested, m.paused)


@dataclass
class Watcher:
    """Remembers what it printed, so each round prints only what changed."""

    api: NmdcClient
    site_id: str | None
    data_resource_ids: list[str] = field(default_factory=list)
    as_json: bool = False
    emit: Callable[[str], None] = print
    _seen: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    _finished: set[str] = field(default_factory=set)

    def _resource_ids(self) -> list[str]:
        if self.data_resource_ids:
            return self.data_resource_ids
        return [r.id for r in self.api.list_data_resources(site_id=self.site_id, page_size=1000)]

    def operations(self) -> list[Operation]:
        """The operations on the watched data resources, each once."""
        found: dict[str, Operation] = {}
        for resource_id in self._resource_ids():
            for op in self.api.list_operations(data_resource_id=resource_id, page_size=1000):
                found[op.id] = op
        return sorted(found.values(), key=lambda op: (op.create_time is None, op.create_time, op.id))

    def round(self) -> int:
        """One pass; returns how many lines were printed."""
        printed = 0
        for op in self.operations():
            sig = _signature(op)
            if self._seen.get(op.id) != sig:
                self._seen[op.id] = sig
                self._print_operation(op)
                printed += 1
            if op.done and op.id not in self._finished:
                self._finished.add(op.id)
                self._print_outcome(op)
                printed += 1
        return printed

    def _print_operation(self, op: Operation) -> None:
        if self.as_json:
            self.emit(json.dumps({"event": "operation", "operation": op.model_dump(mode="json")}))
            return
        m = op.metadata
        parts = [f"operation {op.id}", f"job {m.job_id}", f"site {m.site_id}", f"state={m.state}"]
        if m.progress is not None:
            parts.append(f"progress={m.progress:g}%")
        if m.cancel_requested:
            parts.append("cancel-requested")
        if m.paused:
            parts.append("paused")
        if m.message:
            parts.append(f"message={m.message!r}")
        self.emit(" ".join(parts))

    def _execution(self, op: Operation) -> Execution | None:
        if op.result is None:
            return None
        try:
            return self.api.get_execution(op.metadata.job_id, op.result.id)
        except NotFound:
            return op.result

    def _print_outcome(self, op: Operation) -> None:
        execution = self._execution(op)
        if self.as_json:
            event = (
                {"event": "execution", "execution": execution.model_dump(mode="json")}
                if execution
                else {
                    "event": "error",
                    "operation_id": op.id,
                    "error": op.error.model_dump(mode="json") if op.error else None,
                }
            )
            self.emit(json.dumps(event))
            return
        if execution is not None:
            self.emit(
                f"execution {execution.id} of job {execution.job_id} by {execution.site_id}: "
                f"{execution.status}, {execution.started_at} .. {execution.ended_at}"
            )
            for output in execution.outputs:
                if isinstance(output, dict):
                    self.emit(f"  output {output.get('id')} {output.get('name')} <{output.get('url')}>")
                else:
                    self.emit(f"  output {output}")
        elif op.error is not None:
            self.emit(f"operation {op.id} ended with {op.error.code}: {op.error.message}")

    def run(self, interval: float, once: bool, stop: Callable[[], bool] = lambda: False) -> None:
        """Print rounds every `interval` seconds until `stop()` (or after one round with `once`)."""
        while True:
            try:
                self.round()
            except Exception as exc:
                if once:
                    raise
                log.warning("watch round failed (will retry): %s", exc)
            if once or stop():
                return
            deadline = time.monotonic() + interval
            while time.monotonic() < deadline and not stop():
                time.sleep(min(0.2, interval))

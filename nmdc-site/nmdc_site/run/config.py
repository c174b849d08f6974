"""What `nmdc-site run` was told."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nmdc_site.run.egress import AllowedHost


@dataclass
class RunConfig:
    """The options of `nmdc-site run`; see `nmdc_site.cli.run` for each one's meaning."""

    workflow_id: str
    command: list[str]
    state_dir: Path
    bind: str = "127.0.0.1"
    port: int = 0
    public_url: str | None = None
    poll_interval: float = 5.0
    heartbeat_interval: float | None = None
    lease_seconds: int | None = None
    output_data_type: str | None = None
    kill_grace: float = 10.0
    once: bool = False
    allowed_hosts: tuple[AllowedHost, ...] = ()
    publish_log_tail: bool = False
    min_rate: float = 16 * 1024
    stall_seconds: float = 60.0
    release_on_exit: bool = False

"""`nmdc-site`: run a site against the NMDC Runtime API — serve data, execute jobs, watch operations.

The API and the site's credentials come from flags or the environment: NMDC_API_URL, NMDC_CLIENT_ID,
NMDC_CLIENT_SECRET.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from nmdc_site.client import ApiError, ClientError, NmdcClient
from nmdc_site.data_site import DataSite
from nmdc_site.files import FileServer, default_public_url
from nmdc_site.run.job import Agent, RunConfig
from nmdc_site.watcher import Watcher

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
log = logging.getLogger("nmdc_site")

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="NMDC_API_URL", help="Base URL of the API.")]
ClientId = Annotated[
    str | None, typer.Option("--client-id", envvar="NMDC_CLIENT_ID", help="The site client's id.")
]
ClientSecret = Annotated[
    str | None,
    typer.Option(
        "--client-secret", envvar="NMDC_CLIENT_SECRET", help="The site client's secret (prefer the env)."
    ),
]
Bind = Annotated[str, typer.Option("--bind", help="Address the file server listens on.")]
PublicUrl = Annotated[
    str | None,
    typer.Option("--public-url", help="URL base others reach the files under (default http://BIND:PORT)."),
]
DEFAULT_API_URL = "http://127.0.0.1:8000"


def _client(api_url: str, client_id: str | None, client_secret: str | None) -> NmdcClient:
    if not client_id or not client_secret:
        typer.echo(
            "error: site credentials are needed: --client-id/--client-secret or NMDC_CLIENT_ID/NMDC_CLIENT_SECRET",
            err=True,
        )
        raise typer.Exit(2)
    return NmdcClient(api_url, client_id=client_id, client_secret=client_secret)


def _site_id(api: NmdcClient) -> str:
    me = api.me()
    if not me.site_id:
        typer.echo("error: these credentials are not a site client's", err=True)
        raise typer.Exit(2)
    return me.site_id


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so loops end cleanly and `finally` blocks run."""
    stop = threading.Event()

    def handler(signum, _frame):
        log.info("signal %s: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


@app.command()
def serve(
    directory: Annotated[
        Path, typer.Argument(exists=True, file_okay=False, help="Folder whose files to publish.")
    ],
    data_type: Annotated[str, typer.Option("--data-type", help="data_type of the registered resources.")],
    port: Annotated[int, typer.Option("--port", help="Port of the file server (0: any free port).")] = 8080,
    bind: Bind = "127.0.0.1",
    public_url: PublicUrl = None,
    description: Annotated[str | None, typer.Option(help="Description of the registered resources.")] = None,
    rescan: Annotated[
        float, typer.Option(help="Seconds between scans for new or changed files (0: scan only at start).")
    ] = 10.0,
    api_url: ApiUrl = DEFAULT_API_URL,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
) -> None:
    """A data site: serve DIRECTORY's files over HTTP and register each one once as a data resource.

    Hidden files and names ending in .part/.tmp are skipped: write files elsewhere (or under such a name) and
    rename them into place when complete. Each registered resource is printed as one JSON line.
    """
    stop = _stop_on_signals()
    with _client(api_url, client_id, client_secret) as api:
        site_id = _site_id(api)
        with FileServer(directory, bind, port) as server:
            base = public_url or default_public_url(bind, server.port)
            site = DataSite(
                api=api,
                root=directory.resolve(),
                public_url=base,
                data_type=data_type,
                site_id=site_id,
                description=description,
                on_register=lambda r: typer.echo(json.dumps(r.model_dump(mode="json")), nl=True),
            )
            existing = site.load_known()
            log.info("site %s has %d data resources; publishing %s at %s", site_id, existing, directory, base)
            site.run(rescan, stop=stop.is_set)


@app.command()
def run(
    command: Annotated[list[str], typer.Argument(help="The command to run for each job (after --).")],
    workflow: Annotated[str, typer.Option("--workflow", "-w", help="The workflow whose jobs to take.")],
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir", envvar="NMDC_SITE_STATE_DIR", help="Claimed job, downloads and outputs; keep it."
        ),
    ] = Path(".nmdc-site"),
    once: Annotated[bool, typer.Option("--once", help="Handle one job, then exit.")] = False,
    port: Annotated[int, typer.Option("--port", help="Port serving the outputs (0: any free port).")] = 8081,
    bind: Bind = "127.0.0.1",
    public_url: PublicUrl = None,
    poll_interval: Annotated[float, typer.Option(help="Seconds between looks for claimable jobs.")] = 5.0,
    heartbeat: Annotated[
        float | None, typer.Option(help="Seconds between lease renewals (default: a third of the lease).")
    ] = None,
    output_data_type: Annotated[
        str | None,
        typer.Option(
            help="data_type of the outputs (default: config.output_data_type, else WORKFLOW.output)."
        ),
    ] = None,
    kill_grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL on cancel.")] = 10.0,
    api_url: ApiUrl = DEFAULT_API_URL,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
) -> None:
    """An executing site: claim jobs of WORKFLOW, fetch and verify inputs, run COMMAND, report the outcome.

    COMMAND gets the inputs' paths in place of an argument `{inputs}` (or appended), and the environment
    NMDC_JOB_ID, NMDC_OPERATION_ID, NMDC_WORKFLOW_ID, NMDC_JOB_CONFIG (a JSON file), NMDC_INPUTS (a JSON list
    of paths), NMDC_OUTPUT_DIR (files written there become outputs) and NMDC_PROGRESS_FILE (write
    "<percent> <message>" lines). Exit status 0 is success. See docs/sites.md.
    """
    stop = _stop_on_signals()
    config = RunConfig(
        workflow_id=workflow,
        command=command,
        state_dir=state_dir,
        bind=bind,
        port=port,
        public_url=public_url,
        poll_interval=poll_interval,
        heartbeat_interval=heartbeat,
        output_data_type=output_data_type,
        kill_grace=kill_grace,
        once=once,
    )
    with _client(api_url, client_id, client_secret) as api:
        _site_id(api)
        agent = Agent(api, config, public_url or "")
        with FileServer(agent.state.outputs_root, bind, port) as server:
            agent.public_url = (public_url or default_public_url(bind, server.port)).rstrip("/")
            agent.stopping = stop
            code = agent.run()
            for outcome in agent.handled:
                typer.echo(json.dumps(outcome))
    raise typer.Exit(code)


@app.command()
def watch(
    interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print the current state once, then exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_resource_id: Annotated[
        list[str] | None, typer.Option("--data-resource-id", help="Watch only these (repeatable).")
    ] = None,
    site_id: Annotated[
        str | None, typer.Option("--site-id", help="Whose data resources (default: the caller's site).")
    ] = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
) -> None:
    """A monitoring site: follow the operations on the site's data resources; print changes and executions."""
    stop = _stop_on_signals()
    with _client(api_url, client_id, client_secret) as api:
        watcher = Watcher(
            api=api,
            site_id=site_id or (None if data_resource_id else _site_id(api)),
            data_resource_ids=data_resource_id or [],
            as_json=as_json,
            emit=lambda line: typer.echo(line),
        )
        watcher.run(interval, once, stop=stop.is_set)


def main() -> None:
    """Entry point of the `nmdc-site` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app()
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

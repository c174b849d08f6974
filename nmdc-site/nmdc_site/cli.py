"""`nmdc-site`: run a site against the NMDC Runtime API — serve data, execute jobs, watch operations.

The API and the site's credentials come from flags or the environment: NMDC_API_URL, NMDC_CLIENT_ID,
NMDC_CLIENT_SECRET. An expected failure (bad URL, bad credentials, API unreachable, unknown workflow) is one
line on standard error and exit status 1; bad usage is exit status 2.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import pydantic
import typer

from nmdc_site import __version__
from nmdc_site.client import ClientError, NmdcClient, RetryNotice, RetryPolicy, Unauthorized
from nmdc_site.data_site import DataSite, GrantGate
from nmdc_site.files import FileServer, default_public_url
from nmdc_site.grants import GrantVerifier, PublicKeys
from nmdc_site.run.config import RunConfig
from nmdc_site.run.egress import AllowedHost
from nmdc_site.run.loop import Agent, HostProblem, SetupError
from nmdc_site.watcher import Watcher

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Run a site against the NMDC Runtime API: serve data, execute jobs, watch operations.\n\n"
    "The API and the site's credentials come from flags or the environment: NMDC_API_URL, NMDC_CLIENT_ID, "
    "NMDC_CLIENT_SECRET. An expected failure is one line on standard error and exit status 1; bad usage is 2.",
)
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
Retries = Annotated[
    int,
    typer.Option(
        "--retries",
        min=0,
        envvar="NMDC_SITE_RETRIES",
        help="Retries of a request the API does not answer (or answers 5xx), with backoff, before giving up "
        "(while `run` holds a claim it retries for as long as the lease lasts instead).",
    ),
]
Bind = Annotated[str, typer.Option("--bind", help="Address the file server listens on.")]
PublicUrl = Annotated[
    str | None,
    typer.Option("--public-url", help="URL base others reach the files under (default http://BIND:PORT)."),
]
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_RETRIES = 6


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Say `message` as one line on standard error; the caller raises the returned exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _announce_retry(notice: RetryNotice) -> None:
    log.warning(
        "%s, retry %d/%s in %.1f s: %s %s: %s",
        notice.trouble,
        notice.number,
        notice.retries if notice.retries is not None else "-",
        notice.delay,
        notice.method,
        notice.path,
        notice.reason,
    )


def _client(
    api_url: str,
    client_id: str | None,
    client_secret: str | None,
    retries: int = DEFAULT_RETRIES,
    stop: threading.Event | None = None,
) -> NmdcClient:
    """A client for the site, retrying `retries` times (each retry logged); a stop request ends the waiting."""
    try:
        url = httpx.URL(api_url)
    except httpx.InvalidURL as exc:
        raise _fail(f"--api-url {api_url!r} is not a URL: {exc}", 2) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise _fail(f"--api-url must be an http:// or https:// URL with a host, not {api_url!r}", 2)
    if not client_id or not client_secret:
        raise _fail(
            "site credentials are needed: --client-id/--client-secret or NMDC_CLIENT_ID/NMDC_CLIENT_SECRET", 2
        )
    stop = stop or threading.Event()
    policy = RetryPolicy(
        attempts=retries + 1,
        deadline=lambda: -math.inf if stop.is_set() else math.inf,
        on_retry=_announce_retry,
        sleep=stop.wait,
    )
    return NmdcClient(api_url, client_id=client_id, client_secret=client_secret, retry=policy)


def _site_id(api: NmdcClient) -> str:
    me = api.me()
    if not me.site_id:
        raise _fail("these credentials are not a site client's", 2)
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


def _grant_gate(api: NmdcClient, site_id: str) -> GrantGate:
    """What checks grants for `serve --require-grant`, with the API's public keys fetched once now."""

    def fetch() -> dict:
        # Asked while a request waits (an unknown kid): one quick try, not the command's patient retries.
        with api.retry_policy(RetryPolicy(attempts=2, maximum=1.0)):
            return api.jwks()

    keys = PublicKeys(fetch)
    try:
        count = keys.load()
    except ClientError as exc:
        raise _fail(
            f"cannot fetch the API's grant keys (GET /.well-known/jwks.json): {_one_line(exc)}"
        ) from None
    if not count:
        raise _fail("the API publishes no grant key this site can check grants with")
    log.info("checking access grants against %d key(s) of %s", count, api.base_url)
    return GrantGate(GrantVerifier(keys, site_id))


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
    require_grant: Annotated[
        bool,
        typer.Option(
            "--require-grant",
            help="Register the files with requires_grant: true and serve a file only to a request carrying a "
            "valid access grant for it (from POST /data_resources/{id}:access), checked against the API's keys.",
        ),
    ] = False,
    group: Annotated[
        str | None,
        typer.Option(
            help="The group (sample, data generation) of the registered resources: a workflow with inputs by "
            "role makes one job per group.",
        ),
    ] = None,
    api_url: ApiUrl = DEFAULT_API_URL,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
    retries: Retries = DEFAULT_RETRIES,
) -> None:
    """A data site: serve DIRECTORY's files over HTTP and register each one once as a data resource.

    Hidden files, names ending in .part/.tmp and symbolic links are skipped: write files elsewhere (or under
    such a name) and rename them into place when complete. Each registered resource is printed as one JSON line.
    """
    stop = _stop_on_signals()
    with _client(api_url, client_id, client_secret, retries, stop) as api:
        site_id = _site_id(api)
        gate = _grant_gate(api, site_id) if require_grant else None
        with FileServer(directory, bind, port, guard=gate) as server:
            base = public_url or default_public_url(bind, server.port)
            if gate is not None:
                gate.public_url = base
            site = DataSite(
                api=api,
                root=directory.resolve(),
                public_url=base,
                data_type=data_type,
                site_id=site_id,
                description=description,
                requires_grant=require_grant,
                group=group,
                gate=gate,
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
        float | None,
        typer.Option(
            help="Seconds between lease renewals (default: a third of the lease, at most 30).", min=0.1
        ),
    ] = None,
    lease_seconds: Annotated[
        int | None,
        typer.Option(
            "--lease-seconds",
            min=1,
            help="Ask for claims with a lease this long, up to the workflow's lease_seconds "
            "(default: the workflow's lease, else the server's).",
        ),
    ] = None,
    output_data_type: Annotated[
        str | None,
        typer.Option(
            help="data_type of the outputs (default: config.output_data_type, else WORKFLOW.output)."
        ),
    ] = None,
    kill_grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL on cancel.")] = 10.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="HOST or HOST:PORT inputs may be downloaded from although it is not a public address "
            "(loopback, private, link-local): a lab network, or a test on one machine. Repeatable.",
        ),
    ] = None,
    publish_log_tail: Annotated[
        bool,
        typer.Option(
            "--publish-log-tail",
            help="Publish the last lines of the command's output in the execution's details (which every "
            "token can read), with anything that looks like a secret replaced by [redacted].",
        ),
    ] = False,
    min_rate: Annotated[
        float,
        typer.Option(
            "--min-rate",
            min=0,
            help="Bytes a second below which a download, over --stall-seconds, ends its attempt (UNAVAILABLE); "
            "0: no floor.",
        ),
    ] = 16 * 1024,
    stall_seconds: Annotated[
        float, typer.Option("--stall-seconds", min=0.5, help="The window --min-rate is measured over.")
    ] = 60.0,
    release_on_exit: Annotated[
        bool,
        typer.Option(
            "--release-on-exit",
            help="On Ctrl-C or SIGTERM, give the claimed job back (reason SHUTDOWN) instead of keeping it in "
            "the state dir for the next start (a job whose command finished is kept all the same).",
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Check the set-up, print what would run for a job, and exit (claims nothing)."
        ),
    ] = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
    retries: Retries = DEFAULT_RETRIES,
) -> None:
    """An executing site: claim jobs of WORKFLOW, fetch and verify inputs, run COMMAND, report the outcome.

    COMMAND gets the inputs' paths in place of an argument `{inputs}` (or appended), the path of the input
    of role ROLE in place of `{inputs.ROLE}` (for a workflow with inputs by role), and the environment
    NMDC_JOB_ID, NMDC_OPERATION_ID, NMDC_WORKFLOW_ID, NMDC_JOB_CONFIG (a JSON file), NMDC_INPUTS (a JSON list
    of paths), NMDC_OUTPUT_DIR (files written there become outputs) and NMDC_PROGRESS_FILE (write
    "<percent> <message>" lines). Exit status 0 is success. See docs/sites.md.

    Before any claim it checks that COMMAND's executable resolves and is executable, that the state dir is
    writable, that WORKFLOW exists and that the site has the capabilities it requires (exit 1 with one line
    otherwise); --check does only that, and prints what it would run. Ctrl-C or SIGTERM stops it within 5 s.
    """
    try:
        allowed = tuple(AllowedHost.parse(item) for item in allow_host or ())
    except ValueError as exc:
        raise _fail(f"--allow-host: {exc}", 2) from None
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
        lease_seconds=lease_seconds,
        output_data_type=output_data_type,
        kill_grace=kill_grace,
        once=once,
        allowed_hosts=allowed,
        publish_log_tail=publish_log_tail,
        min_rate=min_rate,
        stall_seconds=stall_seconds,
        release_on_exit=release_on_exit,
    )
    with _client(api_url, client_id, client_secret, retries, stop) as api:
        agent = Agent(api, config, public_url or "", stopping=stop)

        def work() -> int:
            try:
                plan = agent.check()
            except HostProblem as problem:
                if not check:
                    agent.settle(problem)  # the job in the state dir, if any: reported, or given back
                raise
            if check:
                for line in plan.lines(config):
                    typer.echo(line)
                typer.echo(f"ok: ready to claim jobs of {config.workflow_id} (nothing claimed)")
                return 0
            with FileServer(agent.state.outputs_root, bind, port) as server:
                agent.public_url = (public_url or default_public_url(bind, server.port)).rstrip("/")
                try:
                    return agent.run()
                except ClientError:
                    if stop.is_set():
                        return 130  # asked to stop while the API was being retried
                    raise
                finally:
                    for outcome in list(agent.handled):
                        typer.echo(json.dumps(outcome))

        try:
            code = _until_stopped(work, stop)
        except SetupError as exc:
            raise _fail(str(exc)) from None
        if agent.fault:
            raise _fail(f"{agent.fault}; stopping: fix the site, then start again")
    raise typer.Exit(code)


STOP_SECONDS = 3.5
"""How long `run` waits, after Ctrl-C or SIGTERM, for its work to wind down (the command stopped, the claim
recorded or given back) before it leaves anyway: it promises to be gone within 5 s."""


def _until_stopped(work: Callable[[], int], stop: threading.Event, grace: float = STOP_SECONDS) -> int:
    """`work()` on a thread of its own, while this one waits for it or for a stop request; after a stop,
    `work` gets `grace` seconds to wind down, and then the process leaves without it (130).

    The agent's work may block where no stop request reaches it (a request the API does not answer, a
    download, a file being hashed); the claim is recorded in the state dir at every step, so leaving loses
    nothing. Whatever `work` raises is raised here.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["code"] = work()
        except BaseException as exc:  # raised again on the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="agent", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.is_set():
        worker.join(0.2)
    worker.join(grace)
    if "error" in outcome:
        raise outcome["error"]
    if "code" in outcome:
        return outcome["code"]
    log.warning(
        "still busy %g s after the stop request: leaving now; the claim stays in the state dir", grace
    )
    return 130


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
    retries: Retries = DEFAULT_RETRIES,
) -> None:
    """A monitoring site: follow the operations on the site's data resources; print changes and executions."""
    stop = _stop_on_signals()
    with _client(api_url, client_id, client_secret, retries, stop) as api:
        watcher = Watcher(
            api=api,
            site_id=site_id or (None if data_resource_id else _site_id(api)),
            data_resource_ids=data_resource_id or [],
            as_json=as_json,
            emit=lambda line: typer.echo(line),
        )
        watcher.run(interval, once, stop=stop.is_set)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"nmdc-site {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    pass


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main() -> None:
    """Entry point of the `nmdc-site` console script: expected failures are one line, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app()
    except Unauthorized as exc:
        message = f"credentials refused: {_one_line(exc)}"
    except ClientError as exc:
        message = _one_line(exc)
    except pydantic.ValidationError as exc:
        # The answer had another shape than the API's: most likely the URL is some other service.
        message = (
            f"unexpected answer from the API (is --api-url the NMDC Runtime API?): {exc.errors()[0]['msg']}"
        )
    except OSError as exc:
        # Files and sockets of this host: a state dir that cannot be written, a port already taken.
        message = _one_line(exc)
    else:
        return
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()

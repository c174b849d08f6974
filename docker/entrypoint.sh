#!/bin/sh
# The image's entrypoint: the first argument names the process to run.
#   api                the REST API (uvicorn, NMDC_API_WORKERS workers, on NMDC_BIND_HOST:NMDC_API_PORT)
#   dagster-webserver  the Dagster UI (on NMDC_BIND_HOST:NMDC_DAGSTER_PORT)
#   dagster-daemon     the Dagster daemon: the sensors that make jobs, end lapsed leases, watch the queue
#   migrate            create both databases if needed, apply the runtime's migrations and Dagster's, then exit
#   health [ROLE]      is this container's ROLE (default api) healthy? The image's HEALTHCHECK is `health`
# Anything else runs as given (e.g. `nmdc-runtime sites create ...`, or `dagster api grpc ...` for a
# user-code deployment).
set -eu

bind_host=${NMDC_BIND_HOST:-0.0.0.0}
api_port=${NMDC_API_PORT:-8000}
workspace=/app/workspace.yaml
# One JSON object a line suits a log collector; `colored` or `rich` suit a terminal.
log_format=${DAGSTER_LOG_FORMAT:-json}

case "${1:-api}" in
api)
    # Each worker writes its metrics to files here and /metrics sums them; a previous run's files would be
    # added to this one's, so the folder starts empty.
    PROMETHEUS_MULTIPROC_DIR=${PROMETHEUS_MULTIPROC_DIR:-$NMDC_HOME/metrics}
    rm -rf "$PROMETHEUS_MULTIPROC_DIR"
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    export PROMETHEUS_MULTIPROC_DIR
    set -- uvicorn api.main:app --host "$bind_host" --port "$api_port" --workers "${NMDC_API_WORKERS:-2}" \
        --no-server-header
    # One setting names the proxies in front: NMDC_TRUSTED_PROXIES, which the API's login limits read too.
    # uvicorn takes the client's address and scheme from their X-Forwarded-For and X-Forwarded-Proto only;
    # with none named, from nobody's. The options come from the settings themselves (networks normalised), as
    # under `make dev`; an invalid value stops the container here, with the settings' message.
    proxy_options=$(python -c '
import sys
from pydantic import ValidationError
from nmdc_runtime.config import Settings, settings_problem
try:
    print(*Settings().uvicorn_proxy_options())
except ValidationError as error:
    sys.exit(f"nmdc-entrypoint: {settings_problem(error)}")
') || exit 1
    # shellcheck disable=SC2086  # the options are words without spaces
    set -- "$@" $proxy_options
    exec "$@"
    ;;
dagster-webserver)
    exec dagster-webserver --host "$bind_host" --port "${NMDC_DAGSTER_PORT:-3000}" --workspace "$workspace" \
        --log-format "$log_format"
    ;;
dagster-daemon)
    exec dagster-daemon run --workspace "$workspace" --log-format "$log_format"
    ;;
migrate)
    nmdc-runtime db upgrade
    # Dagster's own tables (runs, event log, sensor state), created or brought to the installed Dagster's version
    # before its webserver and daemon start, instead of by whichever of them starts first.
    exec dagster instance migrate
    ;;
health)
    case "${2:-api}" in
    api) url="http://127.0.0.1:$api_port/health" ;;
    dagster-webserver) url="http://127.0.0.1:${NMDC_DAGSTER_PORT:-3000}/server_info" ;;
    # Every daemon's heartbeat in Dagster's storage is recent: within 2 minutes (they beat every 30 s), not
    # Dagster's default of 30 minutes, after which a dead daemon's sensors would long have stopped making jobs.
    dagster-daemon)
        export DAGSTER_DAEMON_HEARTBEAT_TOLERANCE="${DAGSTER_DAEMON_HEARTBEAT_TOLERANCE:-120}"
        exec dagster-daemon liveness-check
        ;;
    *) echo "health: no check for role '$2'" >&2 && exit 2 ;;
    esac
    # Any answer but 2xx (a 503 from /health when the database is unreachable) or no answer is unhealthy.
    exec python3 -c 'import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=4)
except Exception as exc:
    sys.exit(f"unhealthy: {exc}")' "$url"
    ;;
*)
    exec "$@"
    ;;
esac

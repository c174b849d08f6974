"""The deployment files as staff would read them, checked without a Docker engine (`make docker-test` runs them).

Compose files parse and fit together, every service's command is a role the image's entrypoint runs with a
program the image installs, no secret has a default, and nothing is published beyond loopback unless configured.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
SERVICES = {"postgres", "migrate", "api-1", "api-2", "dagster-webserver", "dagster-daemon"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b", re.IGNORECASE)


def load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def defaults(value: str) -> str:
    """`value` as Compose would interpolate it with none of its variables set (`:?` ones read as empty)."""
    return VARIABLE.sub(lambda m: m["arg"] if m["op"] in (":-", "-") else "", value)


def project_services(compose: dict) -> dict[str, dict]:
    """The services that run the project's image (the others run PostgreSQL)."""
    return {name: s for name, s in compose["services"].items() if "NMDC_IMAGE" in s.get("image", "")}


def test_compose_files_parse_and_the_host_override_fits_the_base():
    base, host = load("compose.yaml"), load("compose.host.yaml")
    assert set(base["services"]) == SERVICES
    assert set(host["services"]) <= set(base["services"])
    for name, service in host["services"].items():
        assert service["network_mode"] == "host", name
    # Production's own network: the base file never shares the host's.
    assert all("network_mode" not in service for service in base["services"].values())
    assert set(base["volumes"]) == {"pgdata", "dagster-storage"}
    for compose in (base, host):
        for text in re.findall(r"\$\{[^}]*\}?", yaml.safe_dump(compose)):
            assert VARIABLE.fullmatch(text), f"malformed interpolation {text}"


def test_services_start_in_order_and_report_health():
    services = load("compose.yaml")["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api-1", "api-2", "dagster-webserver", "dagster-daemon"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["restart"] == "no" and services["migrate"]["healthcheck"] == {"disable": True}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # The API replicas use the image's HEALTHCHECK (GET /health); the Dagster processes name their own role.
    assert "healthcheck" not in services["api-1"] and "healthcheck" not in services["api-2"]
    for name in ("dagster-webserver", "dagster-daemon"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "nmdc-entrypoint", "health", name]


def test_no_secret_has_a_default():
    secrets_seen = set()
    for name in ("compose.yaml", "compose.host.yaml"):
        text = (DOCKER / name).read_text()
        for match in VARIABLE.finditer(text):
            if SECRET_NAME.search(match["name"]):
                secrets_seen.add(match["name"])
                assert match["op"] == ":?", (
                    f"{name}: ${{{match['name']}}} must be required (:?), not defaulted"
                )
        for service in yaml.safe_load(text)["services"].values():
            for key, value in (service.get("environment") or {}).items():
                if SECRET_NAME.search(key) or "://" in str(value):
                    # A secret, or a URL that embeds one: only ever from a required variable.
                    assert "@" not in str(value) or ":?" in str(value), f"{name}: {key}={value}"
                    if SECRET_NAME.search(key):
                        assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}: {key}={value}"
    assert secrets_seen == {"POSTGRES_PASSWORD", "NMDC_JWT_SECRET"}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|SECRET)", dockerfile, re.MULTILINE | re.IGNORECASE)


def test_dagster_ui_and_api_publish_on_loopback_unless_configured():
    base, host = load("compose.yaml")["services"], load("compose.host.yaml")["services"]
    published = {name: s.get("ports", []) for name, s in base.items() if s.get("ports")}
    assert set(published) == {"api-1", "api-2", "dagster-webserver"}
    for name, ports in published.items():
        for port in ports:
            assert defaults(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    assert "DAGSTER_UI_BIND" in base["dagster-webserver"]["ports"][0]
    # Host networking: the processes' own bind address is what faces the network.
    for name, service in host.items():
        bind = service.get("environment", {}).get("NMDC_BIND_HOST")
        if name in project_services(load("compose.yaml")):
            assert defaults(bind) == "127.0.0.1", name
    assert host["dagster-webserver"]["environment"]["NMDC_BIND_HOST"] == "${DAGSTER_UI_BIND:-127.0.0.1}"
    assert "listen_addresses=127.0.0.1" in host["postgres"]["command"]


def entrypoint_roles() -> set[str]:
    """The roles of the entrypoint's outer `case`, besides the catch-all."""
    script = ENTRYPOINT.read_text()
    outer = script[script.index('case "${1:-api}" in') :]
    return set(re.findall(r"^([a-z][a-z-]*)\)", outer, re.MULTILINE))


@pytest.fixture
def recording_path(tmp_path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with stand-ins that append the argv they were called with to a file.

    The real programs would start servers; what is checked here is which program the entrypoint runs, with
    which arguments. That each one is installed is checked against the installed entry points.
    """
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for program in ("uvicorn", "dagster", "dagster-webserver", "dagster-daemon", "nmdc-runtime", "python3"):
        stand_in = bin_dir / program
        stand_in.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"with open({str(calls)!r}, 'a') as calls:\n"
            f"    calls.write(json.dumps([{program!r}, *sys.argv[1:]]) + '\\n')\n"
        )
        stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    env = {
        # The project's interpreter after the stand-ins: the entrypoint asks the settings for uvicorn's options.
        "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "NMDC_HOME": str(tmp_path / "home"),
        "NMDC_BIND_HOST": "127.0.0.1",
        "NMDC_API_PORT": "8123",
        "NMDC_DAGSTER_PORT": "3123",
    }
    return env, calls


def run_entrypoint(env: dict[str, str], calls: Path, *args: str) -> list[list[str]]:
    calls.unlink(missing_ok=True)
    subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, check=True, timeout=10)
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_every_service_command_is_an_entrypoint_role_running_an_installed_program(recording_path):
    env, calls = recording_path
    console_scripts = {entry.name for entry in metadata.entry_points(group="console_scripts")}
    roles = entrypoint_roles()
    assert roles == {"api", "dagster-webserver", "dagster-daemon", "migrate", "health"}
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "COPY docker/entrypoint.sh /usr/local/bin/nmdc-entrypoint" in dockerfile
    assert 'ENTRYPOINT ["nmdc-entrypoint"]' in dockerfile and 'CMD ["api"]' in dockerfile

    commands = {name: s["command"] for name, s in project_services(load("compose.yaml")).items()}
    assert set(commands) == SERVICES - {"postgres"}
    for service, command in commands.items():
        assert command[0] in roles, f"{service}: {command}"
        ran = run_entrypoint(env, calls, *command)
        assert ran, f"{service}: the entrypoint ran nothing"
        for argv in ran:
            assert argv[0] in console_scripts, f"{service} runs {argv[0]}, which the project does not install"

    api = run_entrypoint(env, calls, "api")[0]
    assert api[:8] == ["uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", "8123", "--workers", "2"]
    assert (Path(env["NMDC_HOME"]) / "metrics").is_dir()
    # Forwarded headers are believed from the proxies NMDC_TRUSTED_PROXIES names, and from nobody without it.
    assert "--no-proxy-headers" in api and "--proxy-headers" not in api
    env["NMDC_TRUSTED_PROXIES"] = "10.0.0.5, 10.1.0.0/16"
    api = run_entrypoint(env, calls, "api")[0]
    assert api[api.index("--proxy-headers") + 1 :][:2] == ["--forwarded-allow-ips", "10.0.0.5/32,10.1.0.0/16"]
    env["NMDC_TRUSTED_PROXIES"] = "not-an-address"
    refused = subprocess.run(["sh", str(ENTRYPOINT), "api"], env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("nmdc-entrypoint: NMDC_TRUSTED_PROXIES: ")
    assert run_entrypoint(env, calls, "migrate") == [
        ["nmdc-runtime", "db", "upgrade"],
        ["dagster", "instance", "migrate"],
    ]
    webserver = run_entrypoint(env, calls, "dagster-webserver")[0]
    assert webserver[:5] == ["dagster-webserver", "--host", "127.0.0.1", "--port", "3123"]
    # Each health role probes its own process: /health for the API, /server_info for the webserver.
    assert run_entrypoint(env, calls, "health")[0][-1] == "http://127.0.0.1:8123/health"
    assert (
        run_entrypoint(env, calls, "health", "dagster-webserver")[0][-1]
        == "http://127.0.0.1:3123/server_info"
    )
    assert run_entrypoint(env, calls, "health", "dagster-daemon") == [["dagster-daemon", "liveness-check"]]
    assert subprocess.run(["sh", str(ENTRYPOINT), "health", "postgres"], env=env).returncode == 2
    # Anything else runs as given: the bootstrap commands of docs/deploy.md.
    assert run_entrypoint(env, calls, "nmdc-runtime", "sites", "create", "s") == [
        ["nmdc-runtime", "sites", "create", "s"]
    ]


def test_image_is_multi_stage_non_root_with_a_healthcheck_and_a_base_argument():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "ARG BASE_IMAGE=python:3.11-slim"
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    final = lines[lines.index("FROM ${BASE_IMAGE}") :]
    assert "COPY --from=build /opt/nmdc /opt/nmdc" in final
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") and "health" in line for line in final)
    assert "--constraint constraints.txt" in dockerfile


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_build_context_is_only_what_the_image_installs():
    patterns = dockerignore()
    assert patterns[0] == "*", "everything is left out unless let in"
    let_in = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for kept_out in (".venv", ".nmdc", ".git", "tests", "bench", ".env"):
        assert kept_out not in let_in
    assert "nmdc-site" in let_in  # for an image of the site agent
    for pattern in ("**/.venv", "**/.nmdc", "**/jwt_secret", "**/__pycache__"):
        assert pattern in patterns[patterns.index("!nmdc-site/") :], (
            f"{pattern} must come after the exceptions"
        )
    # Every file the Dockerfile copies from the context is let in, or the build fails.
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (DOCKER / "Dockerfile").read_text(), re.MULTILINE)
    for source in " ".join(copied).split():
        assert source.rstrip("/") in let_in, f"the Dockerfile copies {source}, which .dockerignore leaves out"


def test_constraints_pin_every_requirement_and_make_install_uses_them():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    site = tomllib.loads((REPO / "nmdc-site/pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"] + site["dependencies"]
    for requirement in requirements:
        name = canonicalize_name(Requirement(requirement).name)
        assert name in pins, f"{name} is not pinned in constraints.txt: run `make constraints`"
        assert metadata.version(name) == pins[name], f"{name}: installed is not the pinned version"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"pip install .*--constraint constraints\.txt -e '\.\[dev\]'", makefile)
    assert re.search(r"pip install .*--constraint constraints\.txt -e \./nmdc-site", makefile)

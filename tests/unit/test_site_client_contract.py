"""The site client's models (`nmdc_site.client.models`) against the server's OpenAPI document.

The client restates the server's response schemas by hand so that `nmdc-site` ships without the server
(`test_site_distribution.py`); this test, on the server's side, imports both and keeps them from parting. Each
client model names the schema it mirrors; each field it reads must be on that schema, with a type it can read:
the same JSON kind (a time is read as `datetime`, an integer as `int`), an enum's values among the client's
literals, null only where the client takes None, and required on the server where the client requires it.
The client may be wider (`str` for an enum, `Any`, a default) but never narrower. Every request `NmdcClient`
makes is read from its source, and the answer the server documents there must be the schema its model mirrors.
That the server's answers match its document is `tests/integration/test_openapi_conformance.py`'s job.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import types
import typing
from datetime import datetime
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, create_model

from api.main import create_app
from nmdc_runtime.config import Settings
from nmdc_site.client import http, models

# Each client model and the component of the OpenAPI document it mirrors.
MIRRORS: dict[type[BaseModel], str] = {
    models.Token: "Token",
    models.Principal: "PrincipalRead",
    models.Site: "SiteRead",
    models.Credentials: "SiteCredentials",
    models.User: "UserRead",
    models.Checksum: "Checksum",
    models.DataResource: "DataResourceRead",
    models.AccessUrl: "AccessUrl",
    models.Workflow: "WorkflowRead",
    models.Job: "JobRead",
    models.Execution: "ExecutionRead",
    models.OperationError: "Status",
    models.OperationMetadata: "OperationMetadata",
    models.Operation: "Operation_ExecutionRead_OperationMetadata_",
    models.ClaimedOperation: "ClaimedOperationRead",
    # One page stands for all: every list's page has the same two fields, its items typed per list (and
    # `test_each_answer_the_client_reads_is_the_schema_its_model_mirrors` checks every page the client reads).
    models.Page: "Page_JobRead_",
}
MIRRORS_NOTHING: dict[type[BaseModel], str] = {
    models.ApiModel: "the base of every model: its settings only, no field",
}
# (client model, field) -> why the client may find the field missing from the server's schema. The field
# must have a default in the client.
ABSENT_ON_SERVER: dict[tuple[type[BaseModel], str], str] = {}
# Requests whose answer the client hands back as plain JSON, with no model.
RAW_ANSWERS: dict[tuple[str, str], str] = {
    ("GET", "/health"): "returned to the caller as it is; the client reads nothing in it",
    ("GET", "/.well-known/jwks.json"): "a JSON Web Key Set, read by PyJWT",
}

REF = "#/components/schemas/"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The OpenAPI document of an app that is never started: it depends on no setting and no database."""
    return create_app(Settings(database_url="postgresql://openapi.invalid/unused")).openapi()


# ---- comparing one client type with one server schema --------------------------------------------------


def _split_client(annotation: Any) -> tuple[list[Any], bool]:
    """The alternatives of a client annotation, and whether it takes None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def _split_server(schema: dict[str, Any], components: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The alternatives of a server schema (enum components resolved), and whether it may be null."""
    if len(schema.get("allOf", [])) == 1:
        schema = schema["allOf"][0]
    alternatives = schema.get("anyOf") or schema.get("oneOf") or [schema]
    kept = []
    for alternative in alternatives:
        if alternative.get("type") == "null":
            continue
        name = alternative.get("$ref", "").removeprefix(REF)
        if name and "enum" in components[name]:
            alternative = components[name]
        kept.append(alternative)
    return kept, len(kept) < len(alternatives)


def _server_values(schema: dict[str, Any]) -> set[Any] | None:
    if "const" in schema:
        return {schema["const"]}
    return set(schema["enum"]) if "enum" in schema else None


def _fits(client: Any, server: dict[str, Any], components: dict[str, Any], where: str) -> list[str]:
    """Why the client type `client` cannot read what `server` describes ([] when it can)."""
    if client is Any:
        return []
    origin, args = typing.get_origin(client), typing.get_args(client)
    ref = server.get("$ref", "").removeprefix(REF)
    kind = server.get("type")
    if ref:
        if isinstance(client, type) and issubclass(client, BaseModel):
            mirrored = MIRRORS.get(client)
            return (
                []
                if mirrored == ref
                else [f"{where}: the client reads {client.__name__} ({mirrored}), the server sends {ref}"]
            )
        if origin is dict and args[1] is Any:
            return []  # an object read as it is (a page's items, typed later by the list's model)
        return [f"{where}: the server sends an object ({ref}), the client reads {client!r}"]
    if kind is None:
        return [f"{where}: the server sends any JSON value, the client reads only {client!r}"]
    values = _server_values(server)
    if origin is Literal or (isinstance(client, type) and issubclass(client, Enum)):
        accepted = set(args) if origin is Literal else {member.value for member in client}
        if values is None or not values <= accepted:
            return [f"{where}: the server sends {values or kind}, the client accepts only {sorted(accepted)}"]
        return []
    if kind == "array":
        if origin is list:
            return _compare(args[0] if args else Any, server.get("items", {}), components, f"{where}[]")
        return [f"{where}: the server sends an array, the client reads {client!r}"]
    if kind == "object":
        if origin is not dict and client is not dict:
            return [f"{where}: the server sends an object, the client reads {client!r}"]
        extra = server.get("additionalProperties", True)
        value = args[1] if args else Any
        return _compare(value, {} if extra is True else extra, components, f"{where}{{}}")
    if kind == "string" and server.get("format") == "date-time":
        expected: type = datetime
    else:
        expected = {"string": str, "integer": int, "number": float, "boolean": bool}[kind]
    if client is not expected:
        shown = f"{kind} ({server['format']})" if "format" in server else kind
        return [f"{where}: the server sends {shown}, the client reads {client!r}"]
    return []


def _compare(annotation: Any, schema: dict[str, Any], components: dict[str, Any], where: str) -> list[str]:
    """Why a client field typed `annotation` cannot read a server value described by `schema`."""
    client, client_null = _split_client(annotation)
    if client == [Any]:
        return []
    server, server_null = _split_server(schema, components)
    problems = (
        [f"{where}: the server may send null, the client does not take None"]
        if server_null and not client_null
        else []
    )
    for alternative in server:
        reasons = [_fits(c, alternative, components, where) for c in client]
        if all(reasons):
            problems.extend(reason for found in reasons for reason in found)
    return problems


def model_problems(model: type[BaseModel], component: str, document: dict[str, Any]) -> list[str]:
    """Every way `model` fails to read what the server's `component` describes."""
    components = document["components"]["schemas"]
    schema = components[component]
    properties, required = schema.get("properties", {}), set(schema.get("required", []))
    problems = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        where = f"{model.__name__}.{key} (server: {component}.{key})"
        if key not in properties:
            if (model, key) not in ABSENT_ON_SERVER or field.is_required():
                problems.append(f"{where}: not on the server's schema")
            continue
        if field.is_required() and key not in required:
            problems.append(f"{where}: the client requires it, the server may leave it out")
        problems.extend(_compare(field.annotation, properties[key], components, where))
    return problems


# ---- what the client asks, read from its source -----------------------------------------------------


def _path(node: ast.expr) -> str | None:
    """A request path written in the source, each `{...}` placeholder as `{}` (None: not written there)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    return None


def client_requests() -> dict[tuple[str, str], tuple[type[BaseModel] | None, bool]]:
    """Each request `NmdcClient` makes, (method, path) -> (the model it reads the answer with, paged)."""
    found: dict[tuple[str, str], tuple[type[BaseModel] | None, bool]] = {}
    for function in ast.walk(ast.parse(inspect.getsource(http))):
        if not isinstance(function, ast.FunctionDef):
            continue
        sent: list[tuple[str, str]] = []
        validated: set[type[BaseModel]] = set()
        for node in ast.walk(function):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner, attribute = node.func.value, node.func.attr
            if attribute == "model_validate" and isinstance(owner, ast.Name) and hasattr(models, owner.id):
                validated.add(getattr(models, owner.id))
            if not (isinstance(owner, ast.Name) and owner.id == "self"):
                continue
            if attribute == "_send" and (path := _path(node.args[1])) is not None:
                sent.append((node.args[0].value, path))
            elif attribute in ("_get", "_paginate") and (path := _path(node.args[0])) is not None:
                found[("GET", path)] = (getattr(models, node.args[1].id), attribute == "_paginate")
        if sent:
            assert len(sent) == 1 and len(validated) <= 1, (
                f"{function.name}: which answer does each model read?"
            )
            found[sent[0]] = (validated.pop() if validated else None, False)
    return found


def _answers(document: dict[str, Any], method: str, path: str) -> list[dict[str, Any]] | None:
    """The JSON schemas of the success answers the document gives for a request the client writes (None: the
    document has no such operation)."""
    for documented, operations in document["paths"].items():
        if re.sub(r"\{[^}]*\}", "{}", documented) == path and method.lower() in operations:
            responses = operations[method.lower()]["responses"]
            return [
                answer["content"]["application/json"]["schema"]
                for status, answer in responses.items()
                if status.startswith("2") and "application/json" in answer.get("content", {})
            ]
    return None


# ---- the tests ------------------------------------------------------------------------------------------


def test_every_client_model_is_mirrored_or_said_to_mirror_nothing(document):
    defined = {
        value
        for value in vars(models).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == models.__name__
    }
    assert defined == set(MIRRORS) | set(MIRRORS_NOTHING)
    assert not set(MIRRORS) & set(MIRRORS_NOTHING)
    assert set(MIRRORS.values()) <= set(document["components"]["schemas"])


@pytest.mark.parametrize("model", list(MIRRORS), ids=lambda model: model.__name__)
def test_each_client_model_reads_what_the_server_sends(model, document):
    assert model_problems(model, MIRRORS[model], document) == []


def test_each_answer_the_client_reads_is_the_schema_its_model_mirrors(document):
    requests = client_requests()
    # The reading of the source found the requests of every kind (a guard against a reader that finds none).
    assert {
        ("POST", "/token"),
        ("GET", "/jobs"),
        ("POST", "/jobs/{}:claim"),
        ("PATCH", "/operations/{}"),
    } <= set(requests)
    assert {key for key, (model, _) in requests.items() if model is None} == set(RAW_ANSWERS)
    problems = []
    for (method, path), (model, paged) in sorted(requests.items(), key=str):
        if model is None:
            continue
        answers = _answers(document, method, path)
        if not answers:
            problems.append(f"{method} {path}: the client reads its answer, the server documents none")
            continue
        for answer in answers:
            name = answer.get("$ref", "").removeprefix(REF)
            if paged:
                page = document["components"]["schemas"][name]
                problems += model_problems(models.Page, name, document)
                name = page["properties"]["resources"]["items"].get("$ref", "").removeprefix(REF)
            if name != MIRRORS[model]:
                problems.append(
                    f"{method} {path}: answers {name or answer}, the client reads {model.__name__}"
                )
    assert problems == []


# The comparison itself, on documents and models broken on purpose: each break must be found, at its field
# (whatever drift the real ones may have, which the tests above report).
def _assert_found_at(field: str, model: type[BaseModel], before: list[str], after: list[str]) -> None:
    new = [problem for problem in after if problem not in before]
    assert new and all(f"{model.__name__}.{field} " in problem for problem in new), new


def _typed(new: dict[str, Any]) -> Any:
    return lambda schema, field: schema["properties"].__setitem__(field, new)


SERVER_BREAKS = {
    "a field removed": ("JobRead", "status", lambda schema, field: schema["properties"].pop(field)),
    "a field renamed": (
        "OperationMetadata",
        "cancel_requested",
        lambda schema, field: schema["properties"].__setitem__("canceling", schema["properties"].pop(field)),
    ),
    "an integer become a string": ("JobRead", "attempts", _typed({"type": "string"})),
    "a time become a plain string": ("SiteRead", "created_at", _typed({"type": "string"})),
    "a string become a time": ("DataResourceRead", "url", _typed({"type": "string", "format": "date-time"})),
    "a required field made nullable": (
        "DataResourceRead",
        "size",
        _typed({"anyOf": [{"type": "integer"}, {"type": "null"}]}),
    ),
    "a required field made optional": (
        "ExecutionRead",
        "operation_id",
        lambda schema, field: schema["required"].remove(field),
    ),
    "an enum become an integer": ("Checksum", "type", _typed({"type": "integer"})),
    "a list's items changed": (
        "SiteRead",
        "capabilities",
        _typed({"type": "array", "items": {"type": "integer"}}),
    ),
    "a map's values changed": (
        "AccessUrl",
        "headers",
        _typed({"type": "object", "additionalProperties": {"type": "integer"}}),
    ),
    "a nested model swapped": (
        "Operation_ExecutionRead_OperationMetadata_",
        "metadata",
        _typed({"$ref": REF + "Status"}),
    ),
}


@pytest.mark.parametrize("component, field, breaks", list(SERVER_BREAKS.values()), ids=list(SERVER_BREAKS))
def test_a_server_schema_broken_on_purpose_is_found(component, field, breaks, document):
    (model,) = [model for model, name in MIRRORS.items() if name == component]
    broken = copy.deepcopy(document)
    breaks(broken["components"]["schemas"][component], field)
    _assert_found_at(
        field, model, model_problems(model, component, document), model_problems(model, component, broken)
    )


CLIENT_BREAKS = {
    "a field the server lacks": (models.Job, "state", (str, ...)),
    "an int read as a str": (models.Job, "attempts", (str, 0)),
    "a time read as a str": (models.Operation, "create_time", (str, ...)),
    "a float read as an int": (models.OperationMetadata, "progress", (int | None, None)),
    "a nullable field read as not null": (models.DataResource, "description", (str, "")),
    "an optional server field required": (models.Workflow, "lease_seconds", (int, ...)),
    "too few literals": (models.Checksum, "type", (Literal["sha256"], ...)),
    "a list's items read as another type": (models.Site, "capabilities", (list[int], [])),
}


@pytest.mark.parametrize("model, field, typed", list(CLIENT_BREAKS.values()), ids=list(CLIENT_BREAKS))
def test_a_client_model_broken_on_purpose_is_found(model, field, typed, document):
    broken = create_model(model.__name__, __base__=model, **{field: typed})
    before, after = (model_problems(each, MIRRORS[model], document) for each in (model, broken))
    _assert_found_at(field, model, before, after)

"""Broken object-level authorization (OWASP API1) over every route of the app.

``ROUTES`` classifies each (method, path) that ``create_app`` serves, ``/v1``, admin,
fine-tuning, console and the API docs included: either it names a tenant's object (in its
path, or in its body) or it says why it names none. A route that is not in the table fails
``test_every_route_of_the_app_is_classified``; so adding an endpoint forces a decision here.

For each object route, tenant A owns a real object of every kind (tenant, key, policy
version, audit entry, dataset, job, trained model). Then each attacker calls the route with
A's object and with an id that does not exist:

- tenant B's tenant admin, by bearer key and by console session cookie (with its CSRF token),
- tenant B's app key,
- tenant A's app key (a lower role of the owner).

Both answers must be the same status (404, or 403 where the role may not use the route at
all, which is decided before any object is looked up) with the same problem body once the
per-request fields (``instance``, ``request_id``) are dropped and the caller's own words put
back. Finally the operator reads every object again: all of them still exist, unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from appliance.api.app import create_app
from appliance.roles import Role
from appliance.services.audit import AuditFilter
from appliance.services.console_sessions import CSRF_HEADER
from appliance.services.principal import Principal
from tests.conftest import BACKENDS
from tests.finetune_support import OP, add_tickets, finetune_tenant, queue_job
from tests.support import Stack, database_url, live_stack, make_services, make_settings

MISSING_ID = "00000000-0000-0000-0000-000000000000"
POLICY_DOC = "extends: default\nname: intruder\n"


@dataclass(frozen=True)
class Obj:
    """A route that reaches a tenant's object through its path (and maybe its body).

    ``tenant_admin`` says whether a tenant admin passes the route's role guard (then a
    foreign object is 404; otherwise every object is the same 403)."""

    tenant_admin: bool
    app: bool = False
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class BodyRef:
    """A route without an object id in its path that names one in its body or query."""

    body: dict[str, Any] | None = None
    query: dict[str, str] | None = None
    tenant_admin: bool = False
    app: bool = False
    status: int = 404
    """What a tenant that may use the route gets for a foreign (or missing) object."""


@dataclass(frozen=True)
class NoObject:
    """Names no tenant object; the reason is the classification."""

    reason: str


Entry = Obj | BodyRef | NoObject

GLOBAL = "global to the appliance (no tenant owns it); covered by the role matrix in test_tenant_isolation.py"
OWN = "acts on the caller's own tenant or session only: there is no id to swap"
PUBLIC = "public, tenant-free content shipped in the package"

ROUTES: dict[tuple[str, str], Entry] = {
    # health, metrics, API docs
    ("GET", "/healthz"): NoObject(PUBLIC),
    ("GET", "/readyz"): NoObject(PUBLIC),
    ("GET", "/metrics"): NoObject("process metrics: counters only, no tenant ids or content"),
    ("GET", "/schema"): NoObject(PUBLIC),
    ("GET", "/schema/swagger"): NoObject(PUBLIC),
    ("GET", "/schema/redoc"): NoObject(PUBLIC),
    ("GET", "/schema/openapi.json"): NoObject(PUBLIC),
    ("GET", "/schema/assets/{name:str}"): NoObject(PUBLIC),
    ("GET", "/schema/oauth2-redirect.html"): NoObject(PUBLIC),
    ("GET", "/schema/{path:str}"): NoObject(PUBLIC + " (the OpenAPI plugin's other renderers)"),
    # tenants and keys
    ("POST", "/admin/v1/tenants"): NoObject("operator only: creates a tenant"),
    ("GET", "/admin/v1/tenants"): NoObject(OWN),
    ("GET", "/admin/v1/tenants/{tenant:str}"): Obj(tenant_admin=True),
    ("DELETE", "/admin/v1/tenants/{tenant:str}"): Obj(tenant_admin=False),
    ("POST", "/admin/v1/tenants/{tenant:str}/keys"): Obj(tenant_admin=True, body={"role": "app", "name": "intruder"}),
    ("GET", "/admin/v1/tenants/{tenant:str}/keys"): Obj(tenant_admin=True),
    ("DELETE", "/admin/v1/tenants/{tenant:str}/keys/{key_id:str}"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/keys"): NoObject(GLOBAL),
    ("GET", "/admin/v1/keys"): NoObject(GLOBAL),
    ("DELETE", "/admin/v1/keys/{key_id:str}"): Obj(tenant_admin=False),
    # policies
    ("GET", "/admin/v1/tenants/{tenant:str}/policy"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/tenants/{tenant:str}/policy"): Obj(tenant_admin=False, body={"document": POLICY_DOC}),
    ("POST", "/admin/v1/tenants/{tenant:str}/policy/rollback"): Obj(tenant_admin=False, body={"version": 1}),
    ("GET", "/admin/v1/tenants/{tenant:str}/policy/versions"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/policy/versions/{version:int}"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/policy/diff"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/policies/lint"): NoObject("validates the posted draft; reads nothing stored"),
    ("POST", "/admin/v1/policies/preview"): BodyRef(
        body={"document": POLICY_DOC, "texts": ["hello"], "tenant": "{tenant}"}, tenant_admin=True
    ),
    ("GET", "/admin/v1/policies/schema"): NoObject(PUBLIC),
    ("GET", "/admin/v1/policies/presets"): NoObject(PUBLIC),
    ("GET", "/admin/v1/policies/presets/{name:str}"): NoObject(PUBLIC + " (the shipped presets)"),
    # audit
    ("GET", "/admin/v1/audit"): BodyRef(query={"tenant": "{tenant}"}, tenant_admin=True, status=200),
    ("GET", "/admin/v1/audit/verify"): NoObject(GLOBAL),
    ("POST", "/admin/v1/audit/export"): NoObject(GLOBAL),
    ("GET", "/admin/v1/audit/{entry_id:int}"): Obj(tenant_admin=True),
    # operations
    ("GET", "/admin/v1/operations/api-keys"): NoObject(GLOBAL),
    ("GET", "/admin/v1/operations/data-keys"): NoObject(GLOBAL),
    ("GET", "/admin/v1/operations/models"): NoObject(GLOBAL),
    # fine-tuning
    ("POST", "/admin/v1/tenants/{tenant:str}/datasets"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/datasets"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/datasets/{dataset:str}"): Obj(tenant_admin=True),
    ("DELETE", "/admin/v1/tenants/{tenant:str}/datasets/{dataset:str}"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/tenants/{tenant:str}/finetune/jobs"): Obj(
        tenant_admin=True,
        body={"dataset": "{dataset}", "task": "classifier", "output_model": "stolen", "target_epsilon": 1.0},
    ),
    ("GET", "/admin/v1/tenants/{tenant:str}/finetune/jobs"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/finetune/jobs/{job_id:str}"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/tenants/{tenant:str}/finetune/jobs/{job_id:str}/cancel"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/privacy-budget"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/models/{name:str}/versions"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/models/{name:str}/card"): Obj(tenant_admin=True),
    ("GET", "/admin/v1/tenants/{tenant:str}/models/{name:str}/versions/{version:int}"): Obj(tenant_admin=True),
    ("POST", "/admin/v1/tenants/{tenant:str}/models/{name:str}/rollback"): Obj(tenant_admin=True, body={"to": 1}),
    ("DELETE", "/admin/v1/tenants/{tenant:str}/models/{name:str}/versions/{version:int}"): Obj(tenant_admin=True),
    # the OpenAI-compatible API: objects (trained models) are named in the body
    ("GET", "/v1/models"): NoObject(OWN + " (lists the models this tenant may call)"),
    ("POST", "/v1/chat/completions"): BodyRef(
        body={"model": "{name}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        app=True,
        tenant_admin=True,
    ),
    ("POST", "/v1/embeddings"): BodyRef(body={"model": "{name}", "input": "hi"}, app=True, tenant_admin=True),
    ("POST", "/v1/classifications"): BodyRef(body={"model": "{name}", "input": "hi"}, app=True, tenant_admin=True),
    ("POST", "/v1/privacy/analyze"): NoObject(OWN + " (the caller's own policy)"),
    ("POST", "/v1/privacy/anonymize"): NoObject(OWN + " (its vault scope is keyed by the caller's tenant)"),
    # the console
    ("GET", "/console"): NoObject(PUBLIC),
    ("GET", "/console/login"): NoObject(PUBLIC),
    ("GET", "/console/{page:str}"): NoObject(PUBLIC + " (page shells; data comes from the admin API)"),
    ("GET", "/console/static/{name:str}"): NoObject(PUBLIC),
    ("POST", "/console/api/session"): NoObject("sign-in: exchanges the caller's own key"),
    ("GET", "/console/api/session"): NoObject(OWN),
    ("DELETE", "/console/api/session"): NoObject(OWN),
}

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@pytest.fixture(scope="module", params=[*BACKENDS, pytest.param("postgres-rls", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def stack(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """conftest's live server, on a third backend too: PostgreSQL behind row-level security,
    served as a role that owns nothing and cannot bypass it."""
    tmp = tmp_path_factory.mktemp("bola")
    with database_url(backend, tmp) as url, live_stack(make_services(make_settings(tmp / "data", url))) as s:
        yield s


def app_routes(stack: Stack) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, as Litestar registered it (OPTIONS and HEAD are Litestar's own)."""
    out: set[tuple[str, str]] = set()
    for route in create_app(stack.services).routes:
        assert isinstance(route, HTTPRoute), route
        for handler in route.route_handlers:
            assert isinstance(handler, HTTPRouteHandler)
            for method in handler.http_methods:
                if method not in ("OPTIONS", "HEAD"):
                    out.add((method, route.path))
    return out


@dataclass
class World:
    """Tenant A's objects (``theirs``), ids that exist nowhere (``missing``), and the callers."""

    a: str
    b: str
    theirs: dict[str, str]
    missing: dict[str, str]
    attackers: dict[str, tuple[httpx.Client, dict[str, str]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> World:
    svc = stack.services
    a = finetune_tenant(svc, prefix="bola-a")
    b = finetune_tenant(svc, prefix="bola-b")
    a_id = svc.tenants.get(OP, a).id
    dataset = add_tickets(svc, a)
    job = queue_job(svc, a, dataset.id)
    weights = tmp_path_factory.mktemp("bola-model")
    (weights / "config.json").write_text('{"labels": ["x", "y"]}')
    for _ in range(2):  # version 1 is not served, so removing it would succeed for the owner
        svc.model_registry.add_version(
            a_id, "a-clf", "classifier", weights, card={"epsilon": 1.0}, job_id=job.id, dataset_id=dataset.id
        )
    a_app = stack.key(Role.APP, a)
    entry = svc.audit.query(OP, AuditFilter(tenant=a_id), limit=1).items[0].id
    theirs = {
        "tenant": a,
        "key_id": a_app.split("_")[1],
        "version": "1",
        "entry_id": str(entry),
        "dataset": dataset.id,
        "job_id": job.id,
        "name": "a-clf",
    }
    missing = {
        "tenant": "no-such-tenant",
        "key_id": "0000000000000000",
        "version": "1",
        "entry_id": "999999999",
        "dataset": MISSING_ID,
        "job_id": MISSING_ID,
        "name": "no-such-model",
    }
    b_admin = stack.key(Role.TENANT_ADMIN, b)
    console = stack.client()
    signed_in = console.post("/console/api/session", json={"api_key": b_admin})
    assert signed_in.status_code == 201, signed_in.text
    w = World(a, b, theirs, missing)
    w.attackers = {
        "b_tenant_admin": (stack.client(b_admin), {}),
        "b_tenant_admin_console": (console, {CSRF_HEADER: signed_in.json()["csrf_token"]}),
        "b_app": (stack.client(stack.key(Role.APP, b)), {}),
        "a_app": (stack.client(a_app), {}),
    }
    return w


def _fill(template: str, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values[m.group(1)], template)


def _fill_json(obj: Any, values: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return _fill(obj, values)
    if isinstance(obj, dict):
        return {k: _fill_json(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill_json(v, values) for v in obj]
    return obj


def _variants(path: str, body: Any, w: World) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(label, A's values, missing values) for one path template.

    ``foreign``: A's tenant in the path (by name, and by id), against a tenant that does not
    exist. ``own``: the attacker's own tenant B in the path with A's object id in it, against a
    missing id (only where the path holds an object id beyond a per-tenant version number)."""
    params = set(_PARAM.findall(path + str(body)))
    out = [("foreign", w.theirs, w.missing)]
    if "tenant" in params:
        out.append(
            ("foreign-by-id", {**w.theirs, "tenant": w.theirs["tenant_id"]}, {**w.missing, "tenant": MISSING_ID})
        )
        if params & {"key_id", "dataset", "job_id", "name"}:
            out.append(("own", {**w.theirs, "tenant": w.b}, {**w.missing, "tenant": w.b}))
    return out


STRIP = ("instance", "request_id")


def _problem(r: httpx.Response, caller_words: dict[str, str]) -> dict[str, Any]:
    """The body with per-request fields dropped and the caller's own words (the ids it sent)
    replaced by placeholders, so only what the server chose to say is compared."""
    assert r.headers.get("content-type", "").startswith("application/problem+json"), r.text
    text = r.text
    for key, value in sorted(caller_words.items(), key=lambda kv: -len(kv[1])):
        if value not in ("1",):
            text = text.replace(value, "{" + key + "}")
    body: dict[str, Any] = httpx.Response(200, content=text).json()
    body.pop("instance", None)
    body.pop("request_id", None)
    return body


def _expected(entry: Obj | BodyRef, caller: str) -> int:
    if caller.endswith("app"):
        return (entry.status if isinstance(entry, BodyRef) else 404) if entry.app else 403
    if not entry.tenant_admin:
        return 403
    return entry.status if isinstance(entry, BodyRef) else 404


def _object_routes() -> list[tuple[str, str]]:
    return [k for k, v in ROUTES.items() if not isinstance(v, NoObject)]


@pytest.fixture(scope="module")
def before(stack: Stack, world: World) -> dict[str, Any]:
    """What the operator reads of A's objects before any attack: every one exists."""
    world.theirs["tenant_id"] = stack.services.tenants.get(OP, world.a).id
    snap = _snapshot(stack, world)
    for path, (status, _) in snap.items():
        assert status == 200, (path, status)
    return snap


def _snapshot(stack: Stack, w: World) -> dict[str, tuple[int, Any]]:
    op = stack.client(stack.operator_key)
    out: dict[str, tuple[int, Any]] = {}
    for method, path in _object_routes():
        if method != "GET" or isinstance(ROUTES[(method, path)], BodyRef):
            continue
        url = _fill(path, w.theirs)
        params = {"from": "1", "to": "1"} if path.endswith("/diff") else None
        r = op.get(url, params=params)
        out[url] = (r.status_code, _steady(r.json()))
    op.get("/admin/v1/tenants")  # keep the client warm for the next snapshot
    return out


VOLATILE = {"last_used_at", "period_start"}
"""Fields that move with the clock or with A's own app calling: not changes an attacker made."""


def _steady(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: _steady(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [_steady(v) for v in body]
    return body


def test_every_route_of_the_app_is_classified(stack: Stack) -> None:
    """A route added without a row in ROUTES fails here; so does a row for a route that is gone."""
    served = app_routes(stack)
    assert served - ROUTES.keys() == set(), "classify these routes in ROUTES"
    assert ROUTES.keys() - served == set(), "these rows name routes the app no longer serves"


@pytest.mark.parametrize(("method", "path"), _object_routes(), ids=[f"{m} {p}" for m, p in _object_routes()])
def test_another_tenants_object_answers_exactly_like_a_missing_one(
    stack: Stack, world: World, before: dict[str, Any], method: str, path: str
) -> None:
    _attack(world, method, path)


def test_behind_the_wall_the_matrix_holds_without_the_services_tenant_check(
    stack: Stack, world: World, before: dict[str, Any], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second wall: with the services' tenant-access check switched off (every tenant
    principal may name any tenant), PostgreSQL's row-level security alone still answers every
    attack exactly like a missing id. (On the other backends the check is the only wall.)"""
    if backend != "postgres-rls":
        pytest.skip("row-level security exists on PostgreSQL with `appliance db enable-rls` only")
    monkeypatch.setattr(Principal, "require_tenant_access", lambda self, tenant_id: None)
    for method, path in _object_routes():
        _attack(world, method, path)


def _attack(world: World, method: str, path: str) -> None:
    entry = ROUTES[(method, path)]
    assert not isinstance(entry, NoObject)
    for caller, (client, headers) in world.attackers.items():
        if caller == "a_app" and entry.app:
            continue  # A's app key owns what it calls under /v1: it is not a lower role there
        for label, theirs_v, missing_v in (
            _variants(path, entry.body, world) if isinstance(entry, Obj) else [("body", world.theirs, world.missing)]
        ):
            answers = []
            for values in (theirs_v, missing_v):
                body = _fill_json(entry.body, values)
                query = _fill_json(entry.query, values) if isinstance(entry, BodyRef) else None
                if path.endswith("/diff"):
                    query = {"from": "1", "to": "1"}
                kwargs: dict[str, Any] = {"headers": headers, "params": query}
                if path.endswith("/datasets") and method == "POST":
                    kwargs.update(
                        params={"name": "stolen", "format": "jsonl"}, content=b'{"text": "x", "label": "y"}\n'
                    )
                else:
                    kwargs["json"] = body
                answers.append(client.request(method, _fill(path, values), **kwargs))
            theirs, missing = answers
            where = (caller, label, method, path)
            want = _expected(entry, caller)
            if caller == "b_tenant_admin_console" and path.startswith("/v1/"):
                want = 401  # the console cookie is accepted under /admin/ and /console/api/ only
            assert theirs.status_code == missing.status_code == want, (where, theirs.text, missing.text)
            if want == 200:
                assert theirs.json() == missing.json() == {"items": [], "next_cursor": None}, where
                continue
            mine = {f"m_{k}": v for k, v in missing_v.items()} | {f"t_{k}": v for k, v in theirs_v.items()}
            t_body = _problem(theirs, {k: v for k, v in mine.items() if k.startswith("t_")})
            m_body = _problem(missing, {k: v for k, v in mine.items() if k.startswith("m_")})
            assert _renamed(t_body, "t_") == _renamed(m_body, "m_"), (where, t_body, m_body)


def _renamed(body: dict[str, Any], prefix: str) -> str:
    return str(body).replace("{" + prefix, "{")


def test_after_every_attack_the_owner_still_reads_every_object_unchanged(
    stack: Stack, world: World, before: dict[str, Any]
) -> None:
    """Runs after the matrix (same module, declared later): nothing was deleted, revoked,
    cancelled, rolled back, added or changed by any attacker's call."""
    assert _snapshot(stack, world) == before

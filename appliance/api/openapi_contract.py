"""Make ``/schema/openapi.json`` say what the server really does, so a client (or a fuzzer)
generated from it is neither surprised nor misled.

Litestar's generated document leaves out three things this server does on every operation:

- the errors: every failure is an RFC 9457 ``application/problem+json`` body
  (``api/problems.py``); the document now lists, per operation, the problem statuses it can
  answer with, all pointing at one ``Problem`` schema;
- public operations (``opt=PUBLIC``: the probes, the console sign-in) need no key, so their
  ``security`` is empty instead of the document-wide bearer requirement;
- request bodies that refuse unknown fields (msgspec ``forbid_unknown_fields=True``) say
  ``additionalProperties: false`` (:class:`StrictStructSchemaPlugin`).

``tests/security/test_api_fuzz.py`` holds the server to this document.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, Operation, Reference, Schema
from litestar.openapi.spec import OpenAPIResponse as ResponseSpec
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from appliance.api.problems import PROBLEM_JSON

__all__ = ["RESPONSE_MEDIA_TYPES", "StrictStructSchemaPlugin", "complete_openapi"]

_PROBLEM = Schema(
    type="object",  # type: ignore[arg-type]
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type="string", description="urn:appliance:problem:<slug>, stable per kind"),  # type: ignore[arg-type]
        "title": Schema(type="string"),  # type: ignore[arg-type]
        "status": Schema(type="integer"),  # type: ignore[arg-type]
        "detail": Schema(type="string", description="What went wrong; never secrets, PII or tenant content"),  # type: ignore[arg-type]
        "instance": Schema(type="string"),  # type: ignore[arg-type]
        "request_id": Schema(type="string", description="Quote it to the operator; the logs carry it"),  # type: ignore[arg-type]
    },
    description="RFC 9457 problem details. Some kinds add members (errors, budget; under /v1 an OpenAI-style error).",
)

_WHY = {
    400: "The request body is not valid JSON",
    401: "No key, or an unknown, revoked or expired one",
    403: "The key's role may not use this operation",
    404: "Not found, or not visible to this key (another tenant's object answers exactly like a missing one)",
    409: "Conflicts with what is stored (or would overspend a privacy budget)",
    413: "The request body is over the size limit",
    422: "The request failed validation, or the policy blocks its content",
    429: "Too many requests in flight; retry after Retry-After seconds",
    503: "Temporarily unavailable: the database is busy (retry after Retry-After), the audit trail cannot be"
    " written, a model is overloaded or does not load, or (/readyz) the service is not ready",
    507: "The data directory or the database has no room for the write; nothing was stored",
}


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's msgspec Struct schemas, plus ``additionalProperties: false`` for Structs that
    refuse unknown fields: the document then says what the decoder enforces."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        config = getattr(field_definition.type_, "__struct_config__", None)
        if isinstance(config, msgspec.structs.StructConfig) and config.forbid_unknown_fields:
            schema.additional_properties = False
        _restore_number_bounds(field_definition.type_, schema)
        return schema


def _restore_number_bounds(struct: type, schema: Schema) -> None:
    """Litestar drops a number's exclusive bounds (``gt``/``lt``) and, inside ``X | None``,
    its lower bound: put back what the decoder enforces, so a client knows ``0`` is refused
    where ``gt=0`` says so."""
    info = msgspec.inspect.type_info(struct)
    if not isinstance(info, msgspec.inspect.StructType):
        return
    for field in info.fields:
        prop = (schema.properties or {}).get(field.encode_name)
        if not isinstance(prop, Schema):
            continue
        kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        for kind in kinds:
            if isinstance(kind, msgspec.inspect.FloatType | msgspec.inspect.IntType):
                if kind.gt is not None:
                    prop.exclusive_minimum = kind.gt
                if kind.ge is not None:
                    prop.minimum = kind.ge
                if kind.lt is not None:
                    prop.exclusive_maximum = kind.lt
                if kind.le is not None:
                    prop.maximum = kind.le


def _statuses(path: str, method: str, op: Operation, public: bool) -> list[int]:
    out = [404]
    if not public or op.request_body is not None:  # a public POST is the sign-in: a bad key is 401
        out += [401, 403]
    if op.parameters or op.request_body is not None:
        out.append(422)
    if op.request_body is not None:
        out += [400, 413]
    if method in ("post", "delete"):
        out += [409, 507]
    if path.startswith("/v1/"):
        out.append(429)
    out.append(503)  # the database busy past its lock or pool timeout (and more per route, see _WHY)
    return sorted(set(out))


RESPONSE_MEDIA_TYPES = "response_media_types"
"""A handler's ``opt`` key: the media types its 200 answer may have, when it has several
(the audit export: JSONL or CSV); Litestar documents only one."""


def _handler_opts(app: Litestar) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            out |= {(route.path_format, m.lower()): handler.opt for m in handler.http_methods}
    return out


def complete_openapi(app: Litestar) -> OpenAPI:
    """Add the problem responses and the public operations' empty ``security`` to the app's
    document, in place (Litestar builds it once and serves that object)."""
    doc = app.openapi_schema
    assert doc.components is not None
    doc.components.schemas = {**(doc.components.schemas or {}), "Problem": _PROBLEM}
    ref = Reference(ref="#/components/schemas/Problem")
    opts = _handler_opts(app)
    for path, item in (doc.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            op: Operation | None = getattr(item, method)
            if op is None:
                continue
            opt = opts.get((path, method), {})
            is_public = bool(opt.get("exclude_from_auth"))
            if is_public:
                op.security = []
            responses = dict(op.responses or {})
            media_types = opt.get(RESPONSE_MEDIA_TYPES)
            ok = responses.get("200")
            if media_types and isinstance(ok, ResponseSpec):
                ok.content = {m: OpenAPIMediaType(schema=Schema(type="string")) for m in media_types}  # type: ignore[arg-type]
            for status in _statuses(path, method, op, is_public):
                responses[str(status)] = ResponseSpec(
                    description=_WHY[status], content={PROBLEM_JSON: OpenAPIMediaType(schema=ref)}
                )
            op.responses = responses
    return doc

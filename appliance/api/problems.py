"""The one place errors become HTTP: RFC 9457 problem+json with a stable ``type``.

Under ``/v1/`` the body also carries an OpenAI-style ``error`` member, so the official
``openai`` client raises a typed error with a readable message. Nothing here ever
returns a stack trace or echoes request content.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from appliance.errors import (
    ApplianceError,
    AuditBusy,
    Blocked,
    BudgetExceeded,
    InvalidRows,
    Overloaded,
    StorageFull,
)
from appliance.logs import request_id_var
from appliance.policy.loader import PolicyError

log = logging.getLogger(__name__)
TYPE_BASE = "urn:appliance:problem:"
PROBLEM_JSON = "application/problem+json"

_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def problem(
    request: Request[Any, Any, Any],
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id_var.get(),
    }
    if errors:
        body["errors"] = errors
    if extensions:
        body.update(extensions)
    if request.url.path.startswith("/v1/"):
        kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        body["error"] = {"message": detail, "type": kind, "code": slug, "param": None}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _appliance_error(request: Request[Any, Any, Any], exc: ApplianceError) -> Response[dict[str, Any]]:
    if exc.status >= 500:
        log.error("service error", extra={"error": exc.slug})
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, Overloaded | AuditBusy):
        headers = {"Retry-After": str(exc.retry_after_s)}
    errors: list[dict[str, Any]] | None = None
    if isinstance(exc, PolicyError):
        errors = [{"field": i.path, "message": i.message, "line": i.line, "column": i.column} for i in exc.issues]
    if isinstance(exc, Blocked):
        errors = [{"entity_type": t} for t in exc.entity_types]
    if isinstance(exc, InvalidRows):
        errors = exc.errors
    extensions = None
    if isinstance(exc, BudgetExceeded):
        extensions = {
            "budget": {
                "name": exc.budget,
                "limit": exc.limit,
                "spent": exc.spent,
                "reserved": exc.reserved,
                "requested": exc.requested,
                "would_be": exc.would_be,
            }
        }
    return problem(
        request, exc.status, exc.slug, exc.title, exc.detail, errors=errors, headers=headers, extensions=extensions
    )


def _validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    out = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            field = item.get("key")
            out.append(
                {
                    "field": "body" if field == "data" else field,
                    "message": item.get("message"),
                    "source": item.get("source"),
                }
            )
    return out


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors) or "request failed validation"
        return problem(request, 422, "validation-error", "Validation failed", detail, errors=errors)
    if type(exc) is ClientException and request.method in ("POST", "PUT", "PATCH"):
        # Litestar raises the bare ClientException when the body does not decode.
        return problem(
            request, 400, "malformed-json", "Malformed JSON", f"the request body is not valid JSON ({exc.detail})"
        )
    slug, title = _HTTP_SLUGS.get(status, ("http-error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and status != 500 else title
    return problem(request, status, slug, title, detail, headers=exc.headers)


def _driver_code(exc: Exception) -> str | None:
    """A database driver's error code (SQLite's name, PostgreSQL's SQLSTATE): says what failed
    without the message, which may quote SQL parameters."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None)
    return str(code) if code else None


_BUSY_CODES = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED", "55P03", "40P01", "40001"})
"""Another writer held the lock too long (SQLite busy, PostgreSQL lock timeout, deadlock,
serialization failure): nothing was written, and the same request may succeed a moment later."""


_FULL_CODES = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE", "53100"})
"""The database had no room for a write (where ``transaction()`` did not already say so)."""


_GONE_CODES = frozenset({"57P01", "57P02", "57P03"})
"""PostgreSQL shut the connection down (admin shutdown, crash shutdown, cannot connect now):
a restart or failover; class 08 (connection exceptions) means the same."""


def _connection_lost(exc: Exception) -> bool:
    code = _driver_code(exc) or ""
    # psycopg's errors without a SQLSTATE are the client's own: the server could not be reached
    # (down, restarting) or the socket broke; sqlite3's errors have no ``sqlstate`` at all.
    unreached = getattr(getattr(exc, "orig", None), "sqlstate", "") is None
    invalidated = bool(getattr(exc, "connection_invalidated", False))
    return invalidated or unreached or code in _GONE_CODES or code.startswith("08")


def _database_busy(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, OperationalError) and _driver_code(exc) in _FULL_CODES:
        return _appliance_error(request, StorageFull("the database has no room for this write; nothing was stored"))
    if isinstance(exc, OperationalError) and _connection_lost(exc):
        # The transaction died with its connection, so nothing of it was committed; the pool
        # checks connections before use, so the next request gets a fresh one.
        log.warning("database connection lost", extra={"driver_code": _driver_code(exc)})
        return problem(
            request,
            503,
            "database-unavailable",
            "Database unavailable",
            "the connection to the database was lost and nothing was changed; retry after Retry-After seconds",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, OperationalError) and _driver_code(exc) not in _BUSY_CODES:
        return _unexpected(request, exc)
    log.warning("database busy", extra={"error_type": type(exc).__name__, "driver_code": _driver_code(exc)})
    return problem(
        request,
        503,
        "database-busy",
        "Database busy",
        "the database was busy with other writes and nothing was changed; retry after Retry-After seconds",
        headers={"Retry-After": "1"},
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # The message may hold request content: log the type and where, never the text.
    where = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in where if "/appliance/" in f.filename and "/site-packages/" not in f.filename]
    frames = [f"{f.filename}:{f.lineno}:{f.name}" for f in [*ours[-5:], *where[-2:]]]
    extra: dict[str, Any] = {"error_type": type(exc).__name__, "frames": frames}
    code = _driver_code(exc)
    if code is not None:
        extra["driver_code"] = code
    log.error("unhandled error", extra=extra)
    return problem(
        request,
        500,
        "internal-error",
        "Internal error",
        "an unexpected error occurred; quote the request id to your operator",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ApplianceError: _appliance_error,
    HTTPException: _http_error,
    OperationalError: _database_busy,
    PoolTimeout: _database_busy,
    Exception: _unexpected,
}

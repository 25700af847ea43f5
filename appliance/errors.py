"""The appliance's exception tree, mapped to HTTP in exactly one place (``api/problems.py``).

    ApplianceError                  base; ``status`` and ``slug`` say how callers see it
    ├── ConfigError                 bad settings; start-up stops with one line
    ├── InvalidInput                the caller sent something we will not accept (422)
    │   ├── InvalidRows             an uploaded file failed validation; ``errors`` names each line and field
    │   └── Conflict                it clashes with what is stored (409)
    │       └── BudgetExceeded      a fine-tuning job would overspend a privacy budget
    ├── NotFound                    absent, or not visible to this principal (404)
    ├── AuthenticationFailed        missing, unknown, revoked or expired key (401)
    ├── PermissionDenied            known principal, wrong role (403)
    ├── IntegrityError              ciphertext or chain failed verification (500-class, never leaks why)
    ├── KeyUnavailable              the key needed is gone (shredded tenant) or not loaded
    ├── Blocked                     policy says this content may not pass (422, names types only)
    ├── Overloaded                  queue full; retry later (429 or 503 with Retry-After)
    ├── AuditUnavailable            the audit entry could not be written, so the action fails (503)
    │   └── AuditBusy               ... because the database was busy: retry after Retry-After
    ├── ModelUnavailable            a registered model's files do not load (503; the log says why)
    ├── StorageFull                 the data directory refused a write (disk full, quota, file-size limit) (507)
    └── NotSupportedYet             a valid request for something not built yet (501)

Messages must never contain secrets, PII or tenant content: they reach logs and clients.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class; ``slug`` is the stable problem type, ``status`` the HTTP status."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title


class ConfigError(ApplianceError):
    slug = "configuration-error"
    title = "Invalid configuration"


class InvalidInput(ApplianceError):
    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class Conflict(InvalidInput):
    status = 409
    slug = "conflict"
    title = "Conflict with stored state"


class InvalidRows(InvalidInput):
    """A file (a fine-tuning dataset) failed validation. Each error names a line and a field
    and says what is wrong, never what the line holds."""

    slug = "invalid-rows"
    title = "The file failed validation"

    def __init__(self, detail: str, errors: list[dict[str, object]]) -> None:
        super().__init__(detail)
        self.errors = errors


class BudgetExceeded(Conflict):
    """A fine-tuning job would take a privacy budget past its cap: names the budget, its
    cap, what is spent (and reserved by unfinished jobs), what the job asks for, and the
    total it would reach (for a dataset, composed with the RDP accountant, not summed)."""

    slug = "privacy-budget-exceeded"
    title = "Privacy budget exceeded"

    def __init__(
        self, budget: str, *, limit: float, spent: float, reserved: float, requested: float, would_be: float
    ) -> None:
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.requested = requested
        self.would_be = would_be
        pending = f" and {reserved:.4g} reserved by unfinished jobs" if reserved else ""
        super().__init__(
            f"{budget} budget: {spent:.4g} epsilon spent{pending}; this job asks for {requested:.4g}, "
            f"which would make {would_be:.4g} against a cap of {limit:.4g}"
        )


class NotFound(ApplianceError):
    status = 404
    slug = "not-found"
    title = "Not found"


class AuthenticationFailed(ApplianceError):
    status = 401
    slug = "unauthenticated"
    title = "Authentication required"


class PermissionDenied(ApplianceError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class IntegrityError(ApplianceError):
    """Authenticated decryption or a hash chain failed; the detail never says more than that."""

    slug = "integrity-error"
    title = "Stored data failed an integrity check"


class KeyUnavailable(ApplianceError):
    slug = "key-unavailable"
    title = "Encryption key unavailable"


class Blocked(ApplianceError):
    """Raised with entity *types* only; the values never reach the message."""

    status = 422
    slug = "blocked-by-policy"
    title = "Blocked by policy"

    def __init__(self, entity_types: list[str]) -> None:
        self.entity_types = sorted(set(entity_types))
        super().__init__("the request contains data the policy blocks: " + ", ".join(self.entity_types))


class Overloaded(ApplianceError):
    status = 429
    slug = "overloaded"
    title = "Too many requests"

    def __init__(self, detail: str = "", retry_after_s: int = 1, status: int = 429) -> None:
        super().__init__(detail or self.title)
        self.retry_after_s = retry_after_s
        self.status = status


class AuditUnavailable(ApplianceError):
    status = 503
    slug = "audit-unavailable"
    title = "Audit trail unavailable"


class AuditBusy(AuditUnavailable):
    """The entry could not be written because other writers held the database past its lock
    timeout: nothing was written and the same request may succeed a moment later (Retry-After)."""

    retry_after_s = 1


class AuditOutcomeUnknown(AuditUnavailable):
    """A COMMIT of audit entries was sent but neither its answer nor the table could say
    whether it went through: retrying could write the entries twice, so nothing is retried."""


class ModelUnavailable(ApplianceError):
    """A registered model could not be loaded (its files are not a model this build can run).
    The caller learns which model; the operator's log has the exception type."""

    status = 503
    slug = "model-unavailable"
    title = "Model unavailable"


class StorageFull(ApplianceError):
    """A write to the data directory failed for lack of room (``ENOSPC``, ``EDQUOT``, or a
    file-size limit's ``EFBIG``). Whatever the request was writing was rolled back or removed;
    nothing stored before is touched."""

    status = 507
    slug = "storage-full"
    title = "Insufficient storage"


class NotSupportedYet(ApplianceError):
    status = 501
    slug = "not-supported-yet"
    title = "Not supported yet"

"""Fine-tuning datasets: upload (validate, anonymize, seal), list, show, delete.

A dataset never holds what a request could not: every row goes through the tenant's active
policy with the same detector and transforms as a model call, and a ``block`` entity refuses
the whole upload naming the line. Pseudonyms are numbered per row, as one request's would be,
and their originals are not kept (nothing ever restores a training row), so the vault holds
nothing from a dataset. The anonymized rows are stored only in one sealed blob (the
tenant's data key); the row in ``datasets`` holds counts, a keyed digest of the stored rows
and the sealed label counts. Deleting a dataset deletes its blob; what its jobs spent stays
in the privacy-budget ledger.

The digest (``content_hash``) is what the privacy-budget ledger keeps a dataset's budget by,
so it names the data, not the upload: it covers the rows as stored (anonymized, in their
canonical form, whatever the file's format) as a multiset, in any order. Two uploads of the
same rows have the same hash and share one per-dataset budget, also when the first was
deleted before the second came. Rows that differ in any way (one edited, added or dropped)
make another hash: recognising near-duplicates is not attempted, and the tenant's period
total is what bounds datasets that overlap.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from appliance.crypto.blobs import BlobStore
from appliance.crypto.records import TenantCipher
from appliance.db.base import utcnow
from appliance.db.engine import transaction
from appliance.db.models import Blob, Dataset, FinetuneJob, Tenant
from appliance.errors import Blocked, Conflict, InvalidInput, InvalidRows, NotFound, PermissionDenied
from appliance.roles import Role
from appliance.services.audit import AuditLog
from appliance.services.dataset_rows import (
    FORMATS,
    MAX_ERRORS,
    TASKS,
    Format,
    Limits,
    ParsedDataset,
    Row,
    decode_rows,
    detect_format,
    encode_rows,
    parse_dataset,
)
from appliance.services.paging import DEFAULT_PAGE, Page, page_by_creation
from appliance.services.policies import ActivePolicy
from appliance.services.principal import Principal
from appliance.services.privacy import PrivacyService
from appliance.services.tenants import find_tenant

BLOB_KIND = "dataset"
CHECKPOINT_KIND = "checkpoint"
"""Sealed checkpoints of running jobs (written by the worker's job store)."""
STATS_KIND = "datasets.stats"
DIGEST_PURPOSE = "dataset-digest"
NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
ANONYMIZE_CHUNK = 128
"""Rows per detection pass: big enough for spaCy's batching, small enough for steady progress."""
WRITERS = (Role.OPERATOR, Role.TENANT_ADMIN)
READERS = (Role.OPERATOR, Role.TENANT_ADMIN, Role.COMPLIANCE)
ACTIVE_JOB_STATES = ("queued", "running", "cancelling")

Progress = Callable[[int, int], None]
"""``(rows anonymized, rows in total)``, called as an upload is anonymized."""


@dataclass(frozen=True)
class DatasetView:
    id: str
    tenant: str
    name: str
    task: str
    shape: str
    format: str
    rows: int
    source_bytes: int
    stored_bytes: int
    content_hash: str
    label_counts: dict[str, int] | None
    entities: dict[str, dict[str, object]]
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class StoredDataset:
    """What the worker needs to train: the rows as stored (anonymized) and their digest."""

    id: str
    tenant_id: str
    task: str
    shape: str
    rows: list[dict[str, Any]]
    content_hash: str
    label_counts: dict[str, int] | None


def _numbered(items: Sequence[tuple[str, str]]) -> Mapping[tuple[str, str], str]:
    """Pseudonyms for one row, numbered as a fresh conversation would number them; the
    originals are not stored anywhere."""
    from appliance.privacy.vault import token

    counters: dict[str, int] = {}
    out: dict[tuple[str, str], str] = {}
    for entity_type, value in items:
        counters[entity_type] = counters.get(entity_type, 0) + 1
        out[(entity_type, value)] = token(entity_type, counters[entity_type])
    return out


class DatasetService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        cipher: TenantCipher,
        audit: AuditLog,
        *,
        policies: Callable[[str], ActivePolicy],
        privacy: Callable[[], PrivacyService],
        max_text_chars: int,
    ) -> None:
        """``privacy`` is called only when an upload is anonymized (it loads the NER model)."""
        self._sessions = sessions
        self._blobs = blobs
        self._cipher = cipher
        self._audit = audit
        self._policies = policies
        self._privacy = privacy
        self._max_text_chars = max_text_chars

    # -- upload ----------------------------------------------------------------------------

    def upload_limit(self, principal: Principal, tenant: str) -> int:
        """The largest file this principal may upload for ``tenant`` now (the policy's
        ``finetune.max_dataset_bytes``); refuses at once what :meth:`add` would refuse."""
        principal.require(*WRITERS)
        tenant_id, _ = self._tenant(principal, tenant)
        rules = self._policies(tenant_id).policy.finetune
        if not rules.allowed:
            raise PermissionDenied("this tenant's policy does not allow fine-tuning (finetune.allowed is false)")
        return rules.max_dataset_bytes

    def add(
        self,
        principal: Principal,
        tenant: str,
        name: str,
        data: bytes,
        *,
        fmt: str | None = None,
        task: str | None = None,
        filename: str | None = None,
        content_type: str | None = None,
        on_progress: Progress | None = None,
    ) -> DatasetView:
        """Validate, anonymize and seal one file as dataset ``name``. All or nothing: on any
        problem nothing is stored (no blob, no row, no pseudonym) and the error names the
        lines; the upload is audited either way."""
        principal.require(*WRITERS)
        tenant_id, slug = self._tenant(principal, tenant)
        if not NAME.fullmatch(name):
            raise InvalidInput("dataset name must be 1-63 lowercase letters, digits, '.', '_' or '-'")
        chosen_format = self._format(fmt, filename, content_type)
        if task is not None and task not in TASKS:
            raise InvalidInput(f"task must be one of {', '.join(TASKS)}")
        policy = self._policies(tenant_id)
        rules = policy.policy.finetune
        if not rules.allowed:
            raise PermissionDenied("this tenant's policy does not allow fine-tuning (finetune.allowed is false)")
        if len(data) > rules.max_dataset_bytes:
            raise InvalidInput(
                f"the file has {len(data)} bytes; the policy's finetune.max_dataset_bytes is {rules.max_dataset_bytes}"
            )
        with self._sessions() as session:
            if session.scalar(select(Dataset.id).where(Dataset.tenant_id == tenant_id, Dataset.name == name)):
                raise Conflict(f"tenant {slug!r} already has a dataset named {name!r}")
        limits = Limits(max_rows=rules.max_dataset_rows, max_text_chars=self._max_text_chars)
        try:
            parsed = parse_dataset(data, chosen_format, task, limits)
            rows, facts = self._anonymize(tenant_id, parsed, policy, on_progress)
        except (InvalidInput, Blocked) as exc:
            self._audit.record(
                "dataset.upload",
                actor=principal,
                tenant_id=tenant_id,
                object=f"dataset-name:{name}",
                policy_version=policy.version,
                outcome="blocked" if isinstance(exc, InvalidRows) and _is_block(exc) else "rejected",
                facts={"format": chosen_format, "bytes": len(data)},
            )
            raise
        return self._store(principal, tenant_id, slug, name, chosen_format, parsed, rows, facts, len(data), policy)

    def _format(self, fmt: str | None, filename: str | None, content_type: str | None) -> Format:
        if fmt is not None:
            if fmt not in FORMATS:
                raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
            return fmt
        found = detect_format(filename, content_type)
        if found is None:
            raise InvalidInput("say the file's format: jsonl or csv (a .jsonl or .csv name, or its media type)")
        return found

    def _anonymize(
        self, tenant_id: str, parsed: ParsedDataset, active: ActivePolicy, on_progress: Progress | None
    ) -> tuple[list[Row], dict[str, dict[str, object]]]:
        """Each row through the tenant's rules; a row holding a blocked type is an error
        naming its line and field. Returns the anonymized rows and per-type facts."""
        from appliance.privacy.transforms import apply, blocked_types  # Presidio: loaded on first upload

        privacy = self._privacy()
        rules = active.policy.pii
        out: list[Row] = []
        facts: dict[str, dict[str, object]] = {}
        problems: list[dict[str, object]] = []
        total = len(parsed.rows)
        for start in range(0, total, ANONYMIZE_CHUNK):
            chunk = parsed.rows[start : start + ANONYMIZE_CHUNK]
            found = privacy.detector.analyze_groups([row.texts for row in chunk], rules)
            for row, detections in zip(chunk, found, strict=True):
                try:
                    texts, row_facts = apply(
                        row.texts,
                        detections,
                        rules,
                        hash_key=lambda: privacy.tenant_hash_key(tenant_id),
                        pseudonymize=_numbered,
                    )
                except Blocked:
                    for field_name, ds in zip(row.fields, detections, strict=True):
                        types = blocked_types([ds], rules)
                        if types and len(problems) < MAX_ERRORS:
                            problems.append(
                                {
                                    "line": row.line,
                                    "field": field_name,
                                    "message": "holds data the policy blocks: " + ", ".join(types),
                                    "entity_types": types,
                                }
                            )
                    continue
                out.append(row.with_texts(texts))
                for etype, fact in row_facts.items():
                    entry = facts.setdefault(etype, {"count": 0, "action": fact.action.value})
                    entry["count"] = int(str(entry["count"])) + fact.count
            if on_progress is not None:
                on_progress(min(start + len(chunk), total), total)
        if problems:
            types = sorted({t for p in problems for t in p["entity_types"]})  # type: ignore[attr-defined]
            first = problems[0]
            raise InvalidRows(
                f"the dataset holds data the policy blocks ({', '.join(types)}), first on line {first['line']}, "
                f"field {first['field']}; nothing was stored",
                problems,
            )
        return out, dict(sorted(facts.items()))

    def _store(
        self,
        principal: Principal,
        tenant_id: str,
        slug: str,
        name: str,
        fmt: str,
        parsed: ParsedDataset,
        rows: list[Row],
        facts: dict[str, dict[str, object]],
        source_bytes: int,
        policy: ActivePolicy,
    ) -> DatasetView:
        encoded = list(encode_rows(rows))
        digest = _content_digest(self._cipher.derived_key(tenant_id, DIGEST_PURPOSE), encoded)
        blob = self._blobs.put(tenant_id, BLOB_KIND, iter(encoded))
        labels = parsed.label_counts() if parsed.task == "classification" else None
        stats = {"shape": parsed.shape, "label_counts": labels, "entities": facts}
        try:
            self._cipher.prepare(tenant_id)  # SQLite: reserve key budget before the write lock
            with transaction(self._sessions) as session:
                row = Dataset(
                    tenant_id=tenant_id,
                    name=name,
                    task=parsed.task,
                    format=fmt,
                    blob_id=blob.id,
                    rows=len(rows),
                    source_bytes=source_bytes,
                    content_hash=digest,
                    stats_sealed=b"",
                    created_by=principal.key_id or "local-operator",
                )
                session.add(row)
                session.flush()
                row.stats_sealed = self._cipher.seal(tenant_id, STATS_KIND, row.id, json.dumps(stats).encode())
                self._audit.record(
                    "dataset.upload",
                    actor=principal,
                    tenant_id=tenant_id,
                    object=f"dataset:{row.id}",
                    policy_version=policy.version,
                    facts={
                        "name": name,
                        "task": parsed.task,
                        "format": fmt,
                        "rows": len(rows),
                        "bytes": source_bytes,
                        "labels": len(labels or {}),
                        "entities": facts,
                        "content_hash": row.content_hash,
                    },
                    session=session,
                )
                session.flush()
                return self._view(row, slug, blob.size, stats)
        except DbIntegrityError:
            self._blobs.delete(tenant_id, blob.id)
            raise Conflict(f"tenant {slug!r} already has a dataset named {name!r}") from None
        except BaseException:
            self._blobs.delete(tenant_id, blob.id)
            raise

    # -- reading ---------------------------------------------------------------------------

    def list(
        self, principal: Principal, tenant: str, *, cursor: str | None = None, limit: int = DEFAULT_PAGE
    ) -> Page[DatasetView]:
        """The tenant's datasets, oldest first, a page at a time."""
        principal.require(*READERS)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            query = select(Dataset).where(Dataset.tenant_id == t.id)
            rows, next_cursor = page_by_creation(
                session, query, Dataset.created_at, Dataset.id, tag="d1", cursor=cursor, limit=limit
            )
            return Page([self._view(r, t.slug) for r in rows], next_cursor)

    def get(self, principal: Principal, tenant: str, ref: str) -> DatasetView:
        principal.require(*READERS)
        with self._sessions() as session:
            t = find_tenant(session, principal, tenant)
            return self._view(self._row(session, t.id, ref), t.slug)

    def resolve(self, tenant_id: str, ref: str) -> Dataset:
        """The tenant's dataset by id or name (a detached row); NotFound otherwise."""
        with self._sessions() as session:
            return self._row(session, tenant_id, ref)

    def load(self, tenant_id: str, dataset_id: str) -> StoredDataset:
        """The stored (anonymized) rows, for training. Raises NotFound when the dataset was
        deleted, IntegrityError when its blob fails verification."""
        with self._sessions() as session:
            row = self._row(session, tenant_id, dataset_id)
        stats = self._stats(row)
        rows = decode_rows(self._blobs.read_bytes(tenant_id, row.blob_id))
        return StoredDataset(
            row.id, tenant_id, row.task, str(stats.get("shape")), rows, row.content_hash, stats.get("label_counts")
        )

    # -- deletion --------------------------------------------------------------------------

    def delete(self, principal: Principal, tenant: str, ref: str) -> DatasetView:
        """Delete the row, then the sealed blob. Refused while a job that has not finished
        uses the dataset (cancel it first). What its jobs spent stays charged to its content
        hash: uploading the same rows again does not start a fresh budget."""
        principal.require(*WRITERS)
        with transaction(self._sessions) as session:
            t = find_tenant(session, principal, tenant)
            row = self._row(session, t.id, ref)
            busy = session.scalar(
                select(FinetuneJob.id).where(
                    FinetuneJob.tenant_id == t.id,
                    FinetuneJob.dataset_id == row.id,
                    FinetuneJob.state.in_(ACTIVE_JOB_STATES),
                )
            )
            if busy is not None:
                raise Conflict(f"job {busy} still uses this dataset; cancel it or wait for it to end")
            view = self._view(row, t.slug)
            session.delete(row)
            self._audit.record(
                "dataset.delete",
                actor=principal,
                tenant_id=t.id,
                object=f"dataset:{row.id}",
                facts={"name": row.name, "rows": row.rows, "blob_deleted": True},
                session=session,
            )
        self._blobs.delete(t.id, row.blob_id)
        return view

    # -- housekeeping ----------------------------------------------------------------------

    def sweep_orphans(self, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete ``dataset`` and ``checkpoint`` blobs that no dataset or job names, once they
        are older than ``older_than``: what an upload or a worker killed between writing the
        blob and recording it left behind (sealed, but taking space). -> blobs deleted."""
        cutoff = utcnow() - older_than
        with self._sessions() as session:
            used = set(session.scalars(select(Dataset.blob_id)))
            used |= {b for b in session.scalars(select(FinetuneJob.checkpoint_blob)) if b}
            stale = [
                (row.tenant_id, row.id)
                for row in session.scalars(
                    select(Blob).where(Blob.kind.in_((BLOB_KIND, CHECKPOINT_KIND)), Blob.created_at < cutoff)
                )
                if row.id not in used
            ]
        removed = 0
        for tenant_id, blob_id in stale:
            with contextlib.suppress(NotFound):
                self._blobs.delete(tenant_id, blob_id)
                removed += 1
        return removed

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, tenant_id: str, ref: str) -> Dataset:
        row = session.scalar(
            select(Dataset).where(Dataset.tenant_id == tenant_id, (Dataset.id == ref) | (Dataset.name == ref))
        )
        if row is None:
            raise NotFound("no such dataset")
        return row

    def _tenant(self, principal: Principal, ref: str) -> tuple[str, str]:
        with self._sessions() as session:
            t: Tenant = find_tenant(session, principal, ref)
            return t.id, t.slug

    def _stats(self, row: Dataset) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self._cipher.open(row.tenant_id, STATS_KIND, row.id, row.stats_sealed))
        return stats

    def _view(
        self, row: Dataset, slug: str, stored_bytes: int | None = None, stats: dict[str, Any] | None = None
    ) -> DatasetView:
        stats = stats if stats is not None else self._stats(row)
        if stored_bytes is None:
            try:
                stored_bytes = self._blobs.info(row.tenant_id, row.blob_id).size
            except NotFound:
                stored_bytes = 0
        return DatasetView(
            id=row.id,
            tenant=slug,
            name=row.name,
            task=row.task,
            shape=str(stats.get("shape")),
            format=row.format,
            rows=row.rows,
            source_bytes=row.source_bytes,
            stored_bytes=stored_bytes,
            content_hash=row.content_hash,
            label_counts=stats.get("label_counts"),
            entities=stats.get("entities") or {},
            created_by=row.created_by,
            created_at=row.created_at,
        )


def _content_digest(key: bytes, lines: Sequence[bytes]) -> str:
    """Keyed digest of the stored rows as a multiset: the canonical lines in sorted order (each
    ends in its only newline, so the concatenation is unambiguous)."""
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for line in sorted(lines):
        digest.update(line)
    return digest.hexdigest()


def _is_block(exc: InvalidRows) -> bool:
    return any("entity_types" in e for e in exc.errors)

"""Fine-tuning under the admin API: datasets, jobs, the privacy-budget ledger, and the
versions and cards of trained models. Thin: every rule lives in the services.

Who may do what (a tenant's roles see only their own tenant; another tenant's ids are 404):

    datasets, jobs       tenant_admin and operator write; compliance reads too
    privacy-budget       compliance, operator, tenant_admin read
    model versions/card  tenant_admin and operator change (rollback, remove); compliance reads too
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.routes.admin import INT32_MAX, AuthedRequest, Cursor, Limit, TenantRef, VersionNumber
from appliance.errors import InvalidInput
from appliance.models.registry import VersionInfo
from appliance.roles import Role
from appliance.services.datasets import DatasetView
from appliance.services.finetune import JobRequest, JobView
from appliance.services.model_versions import CardView
from appliance.services.paging import DEFAULT_PAGE
from appliance.services.privacy_budget import BudgetReport

WRITERS = roles(Role.OPERATOR, Role.TENANT_ADMIN)
READERS = roles(Role.OPERATOR, Role.TENANT_ADMIN, Role.COMPLIANCE)
MAX_UPLOAD_BYTES = 1_073_741_824
"""The largest ``finetune.max_dataset_bytes`` a policy may set; each tenant's own limit is
enforced while the body streams in."""

Ref = Annotated[str, PathParameter(max_length=128)]
ModelName = Annotated[str, PathParameter(max_length=128)]
Version = VersionNumber


class DatasetPage(msgspec.Struct):
    items: list[DatasetView]
    next_cursor: str | None


class JobPage(msgspec.Struct):
    items: list[JobView]
    next_cursor: str | None


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dataset: Annotated[str, msgspec.Meta(min_length=1, max_length=63, description="Dataset id or name.")]
    task: Literal["classifier", "lora"]
    output_model: Annotated[str, msgspec.Meta(min_length=1, max_length=128, description="Name to serve it under.")]
    target_epsilon: Annotated[float, msgspec.Meta(gt=0, le=100)]
    base_model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    delta: Annotated[float, msgspec.Meta(gt=0, lt=1)] | None = None
    epochs: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 64
    max_grad_norm: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=10)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)] = 0
    max_seq_len: Annotated[int, msgspec.Meta(ge=8, le=8192)] | None = None
    train_top_layers: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None
    lora_rank: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    holdout_fraction: Annotated[float, msgspec.Meta(ge=0, le=0.5)] | None = None


class RollbackBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    to: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX, description="The version to serve.")]


class DatasetController(Controller):
    path = "/admin/v1/tenants/{tenant:str}/datasets"
    tags = ["fine-tuning: datasets"]

    @post("/", guards=[WRITERS], request_max_body_size=MAX_UPLOAD_BYTES, status_code=201)
    async def upload_dataset(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        name: Annotated[str, QueryParameter(name="name", max_length=63, description="Dataset name (a slug).")],
        task: Annotated[
            Literal["classification", "generation"] | None,
            QueryParameter(name="task", description="Default: from the first row's fields."),
        ] = None,
        fmt: Annotated[
            Literal["jsonl", "csv"] | None,
            QueryParameter(name="format", description="Default: from the Content-Type (application/jsonl, text/csv)."),
        ] = None,
    ) -> DatasetView:
        """The request body is the file itself (JSONL or CSV). Every row is validated and
        anonymized by the tenant's policy before anything is stored; a 422 lists each bad
        line and field."""
        limit = await anyio.to_thread.run_sync(services.datasets.upload_limit, request.user, tenant)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise InvalidInput(f"the file has {declared} bytes; the policy's finetune.max_dataset_bytes is {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidInput(f"the file is over the policy's finetune.max_dataset_bytes of {limit} bytes")
            chunks.append(chunk)
        add = partial(
            services.datasets.add,
            request.user,
            tenant,
            name,
            b"".join(chunks),
            fmt=fmt,
            task=task,
            content_type=request.headers.get("content-type"),
        )
        return await anyio.to_thread.run_sync(add)

    @get("/", guards=[READERS], sync_to_thread=True)
    def list_datasets(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> DatasetPage:
        """Datasets oldest first, a page at a time: follow ``next_cursor`` until it is null."""
        page = services.datasets.list(request.user, tenant, cursor=cursor, limit=limit)
        return DatasetPage(page.items, page.next_cursor)

    @get("/{dataset:str}", guards=[READERS], sync_to_thread=True)
    def get_dataset(self, request: AuthedRequest, services: Svc, tenant: TenantRef, dataset: Ref) -> DatasetView:
        return services.datasets.get(request.user, tenant, dataset)

    @delete("/{dataset:str}", guards=[WRITERS], sync_to_thread=True, status_code=200)
    def delete_dataset(self, request: AuthedRequest, services: Svc, tenant: TenantRef, dataset: Ref) -> DatasetView:
        """Deletes the row and the sealed file; what its jobs spent stays in the budget."""
        return services.datasets.delete(request.user, tenant, dataset)


class JobController(Controller):
    path = "/admin/v1/tenants/{tenant:str}/finetune/jobs"
    tags = ["fine-tuning: jobs"]

    @post("/", guards=[WRITERS], sync_to_thread=True, status_code=201)
    def create_job(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, data: JSONBody[JobCreate]
    ) -> JobView:
        """Queue a job; refused (409, naming the budget, what is spent and what the job asks
        for) when its plan does not fit the tenant's privacy budget."""
        fields: dict[str, Any] = msgspec.structs.asdict(data)
        return services.finetune.create(request.user, tenant, JobRequest(**fields))

    @get("/", guards=[READERS], sync_to_thread=True)
    def list_jobs(
        self,
        request: AuthedRequest,
        services: Svc,
        tenant: TenantRef,
        job_state: Annotated[
            Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"] | None,
            QueryParameter(name="state"),
        ] = None,
        cursor: Cursor = None,
        limit: Limit = DEFAULT_PAGE,
    ) -> JobPage:
        """Jobs oldest first, a page at a time: follow ``next_cursor`` until it is null."""
        page = services.finetune.list(request.user, tenant, state=job_state, cursor=cursor, limit=limit)
        return JobPage(page.items, page.next_cursor)

    @get("/{job_id:str}", guards=[READERS], sync_to_thread=True)
    def get_job(self, request: AuthedRequest, services: Svc, tenant: TenantRef, job_id: Ref) -> JobView:
        """Live progress: step, total_steps, loss, epsilon_spent, eta_s."""
        return services.finetune.get(request.user, tenant, job_id)

    @post("/{job_id:str}/cancel", guards=[WRITERS], sync_to_thread=True, status_code=200)
    def cancel_job(self, request: AuthedRequest, services: Svc, tenant: TenantRef, job_id: Ref) -> JobView:
        return services.finetune.cancel(request.user, tenant, job_id)


class BudgetController(Controller):
    path = "/admin/v1/tenants/{tenant:str}/privacy-budget"
    tags = ["fine-tuning: privacy budget"]

    @get("/", guards=[READERS], sync_to_thread=True)
    def privacy_budget(self, request: AuthedRequest, services: Svc, tenant: TenantRef) -> BudgetReport:
        """Epsilon spent per dataset (RDP-composed) and in the period (summed), with every charge."""
        return services.privacy_budget.report(request.user, tenant)


class ModelVersionController(Controller):
    path = "/admin/v1/tenants/{tenant:str}/models/{name:str}"
    tags = ["fine-tuning: model versions"]

    @get("/versions", guards=[READERS], sync_to_thread=True)
    def list_versions(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, name: ModelName
    ) -> list[VersionInfo]:
        return services.model_versions.versions(request.user, tenant, name)

    @get("/card", guards=[READERS], sync_to_thread=True)
    def served_card(self, request: AuthedRequest, services: Svc, tenant: TenantRef, name: ModelName) -> CardView:
        """The card of the version being served."""
        return services.model_versions.card(request.user, tenant, name)

    @get("/versions/{version:int}", guards=[READERS], sync_to_thread=True)
    def version_card(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, name: ModelName, version: Version
    ) -> CardView:
        return services.model_versions.card(request.user, tenant, name, version)

    @post("/rollback", guards=[WRITERS], sync_to_thread=True, status_code=200)
    def rollback(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, name: ModelName, data: JSONBody[RollbackBody]
    ) -> VersionInfo:
        """Serve version ``to`` from the next request on."""
        return services.model_versions.rollback(request.user, tenant, name, data.to)

    @delete("/versions/{version:int}", guards=[WRITERS], sync_to_thread=True, status_code=200)
    def remove_version(
        self, request: AuthedRequest, services: Svc, tenant: TenantRef, name: ModelName, version: Version
    ) -> VersionInfo:
        """Delete a version that is not being served, with its sealed files."""
        return services.model_versions.remove_version(request.user, tenant, name, version)

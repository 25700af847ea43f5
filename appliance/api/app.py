"""Application factory: one Litestar app over one :class:`Services` container."""

from __future__ import annotations

from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from appliance.api import console
from appliance.api.auth import PUBLIC, BearerKeyAuth
from appliance.api.docs import openapi_config
from appliance.api.openapi_contract import StrictStructSchemaPlugin, complete_openapi
from appliance.api.problems import EXCEPTION_HANDLERS
from appliance.api.request_context import RequestContext
from appliance.api.routes import admin, audit, finetune, health, openai_compat, operations, policies, privacy
from appliance.services.container import Services


class _Metrics(PrometheusController):
    path = "/metrics"
    opt = PUBLIC
    include_in_schema = False


def create_app(services: Services) -> Litestar:
    metrics = PrometheusConfig(app_name="appliance", prefix="appliance", group_path=True, exclude=["/metrics"])
    app = Litestar(
        route_handlers=[
            health.healthz,
            health.readyz,
            admin.TenantController,
            admin.GlobalKeyController,
            audit.AuditController,
            openai_compat.list_models,
            openai_compat.chat_completions,
            openai_compat.embeddings,
            openai_compat.classifications,
            privacy.PrivacyController,
            policies.PolicyController,
            policies.PolicyToolsController,
            finetune.DatasetController,
            finetune.JobController,
            finetune.BudgetController,
            finetune.ModelVersionController,
            operations.OperationsController,
            _Metrics,
            *(console.HANDLERS if services.settings.console.enabled else []),
        ],
        dependencies={"services": Provide(lambda: services, sync_to_thread=False)},
        middleware=[
            metrics.middleware,
            DefineMiddleware(BearerKeyAuth, exclude=["^/schema", "^/metrics", "^/healthz", "^/readyz"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        before_send=[console.console_headers],
        openapi_config=openapi_config(),
        plugins=[StrictStructSchemaPlugin()],
        request_max_body_size=services.settings.server.max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state.services = services
    complete_openapi(app)
    return app


def create_asgi(services: Services) -> RequestContext:
    """What uvicorn serves: the app wrapped so every response carries a request id."""
    return RequestContext(create_app(services))

"""The request flow of ARCHITECTURE.md for model calls: policy, ingress privacy, the model,
egress restoration, audit. Used by the OpenAI-compatible API; no HTTP types here.

Everything that must reach the caller as a status (blocked, unknown model, rate or queue
limits, audit unavailable) happens before the first byte of a streamed answer: the stream
is opened by prefetching the model's first chunk and writing the audit entry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol, TypeVar, cast

import anyio.to_thread

from appliance.db.base import utcnow
from appliance.errors import Blocked, InvalidInput, NotFound
from appliance.models.base import (
    SERVED_BY,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatRunner,
    Classification,
    ClassifierRunner,
    EmbeddingRunner,
    Usage,
)
from appliance.models.registry import ModelInfo
from appliance.models.sampling import SamplingDefaults
from appliance.models.upstream import ENGINE_SAMPLING, UpstreamChatRequest, UpstreamRunner
from appliance.policy.schema import Policy
from appliance.privacy.rules import Action, PrivacyRules
from appliance.services import metrics
from appliance.services.audit import AuditLog
from appliance.services.audit_writer import AuditWriter
from appliance.services.policies import ActivePolicy
from appliance.services.principal import Principal
from appliance.services.privacy import AnonymizeCall, Anonymized, PrivacyService
from appliance.services.privacy_batch import AnonymizeBatcher
from appliance.services.ttl_cache import DEFAULT_TTL_S, TtlCache


class _Counted(Protocol):
    @property
    def prompt_tokens(self) -> int: ...


R = TypeVar("R")
T = TypeVar("T", bound=_Counted)


class Models(Protocol):
    """What the flow needs from the model manager (appliance.models.ModelManager)."""

    def visible(self, tenant_id: str | None = None) -> list[ModelInfo]: ...

    async def load_chat(self, name: str | None = None, tenant_id: str | None = None) -> ChatRunner: ...

    async def load_embedding(self, name: str | None = None, tenant_id: str | None = None) -> EmbeddingRunner: ...

    async def load_classifier(self, name: str, tenant_id: str | None = None) -> ClassifierRunner: ...

    def sampling(self, runner: object) -> SamplingDefaults: ...


@dataclass(frozen=True)
class ChatCall:
    """One chat request as the caller sent it; a sampling field left None gets the model's
    default (see ``appliance/models/sampling.py``)."""

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    scope: str | None = None  # pseudonym scope (a conversation); default: this request only


@dataclass(frozen=True)
class ChatAnswer:
    id: str
    model: str
    text: str
    finish_reason: str
    usage: Usage


@dataclass
class ChatStream:
    id: str
    model: str
    chunks: AsyncGenerator[ChatChunk, None]
    usage: Usage | None = field(default=None)


@dataclass(frozen=True)
class EmbedAnswer:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True)
class ClassifyAnswer:
    model: str
    items: list[Classification]
    """One per input, in order; each item's ``labels`` cut to the caller's ``top_k``."""
    prompt_tokens: int


def output_rules(rules: PrivacyRules, action: str) -> PrivacyRules:
    """The tenant's detection settings with one non-reversible action for everything the model
    produced (pseudonym tokens already in the text are not PII and stay restorable)."""
    return rules.model_copy(update={"default_action": Action(action), "entities": {}})


class InferenceService:
    def __init__(
        self,
        *,
        policies: Callable[[str], ActivePolicy],
        privacy: PrivacyService,
        models: Models,
        audit: AuditLog,
        rate_limit: Callable[[str, int], None],
        anonymizer: AnonymizeBatcher | None = None,
        audit_writer: AuditWriter | None = None,
        model_cache_ttl_s: float = DEFAULT_TTL_S,
        remembered_policy: Callable[[str], ActivePolicy | None] | None = None,
    ) -> None:
        """``anonymizer`` and ``audit_writer`` batch ingress privacy and audit appends across
        concurrent calls (the server passes both); without them each call does its own.

        Which models a tenant sees, and the runner a name resolves to, are remembered for
        ``model_cache_ttl_s`` seconds: a model registered meanwhile is found at once (a miss
        reads the registry again), one removed is still served until then. With
        ``remembered_policy`` (the policy service's memory-only lookup) a call whose policy
        and model list are remembered is admitted on the event loop, without a worker thread."""
        self._policies = policies
        self._privacy = privacy
        self._models = models
        self._audit = audit
        self._rate_limit = rate_limit
        self._anonymizer = anonymizer
        self._audit_writer = audit_writer
        self._remembered_policy = remembered_policy
        self._visible: TtlCache[str, list[ModelInfo]] = TtlCache(model_cache_ttl_s)
        self._chat_runners: TtlCache[tuple[str, str], ChatRunner] = TtlCache(model_cache_ttl_s)
        self._embedding_runners: TtlCache[tuple[str, str], EmbeddingRunner] = TtlCache(model_cache_ttl_s)
        self._classifier_runners: TtlCache[tuple[str, str], ClassifierRunner] = TtlCache(model_cache_ttl_s)

    def forget_runners(self, runners: Collection[object]) -> None:
        """Stop handing out ``runners`` (the model manager closed them: a model removed or
        replaced, a tenant deleted) and re-read which models the tenants see."""
        closed = {id(r) for r in runners}
        for cache in (self._chat_runners, self._embedding_runners, self._classifier_runners):
            cache.discard_where(lambda _, runner: id(runner) in closed)
        self._visible.clear()

    # -- shared steps ----------------------------------------------------------------------

    @staticmethod
    def _tenant(principal: Principal) -> str:
        if principal.tenant_id is None:
            raise InvalidInput("model calls need a tenant key (roles app or tenant_admin)")
        return principal.tenant_id

    def visible_models(self, principal: Principal, policy: Policy | None = None) -> list[ModelInfo]:
        tenant_id = self._tenant(principal)
        policy = policy or self._policies(tenant_id).policy
        return [m for m in self._registered(tenant_id) if policy.allows_model(m.name)]

    def _registered(self, tenant_id: str, *, fresh: bool = False) -> list[ModelInfo]:
        models = None if fresh else self._visible.get(tenant_id)
        if models is None:
            models = self._models.visible(tenant_id)
            self._visible.put(tenant_id, models)
        return models

    async def _chat_runner(self, model: str, tenant_id: str) -> ChatRunner:
        return await _remembered(self._chat_runners, self._models.load_chat, model, tenant_id)

    async def _embedding_runner(self, model: str, tenant_id: str) -> EmbeddingRunner:
        return await _remembered(self._embedding_runners, self._models.load_embedding, model, tenant_id)

    async def _classifier_runner(self, model: str, tenant_id: str) -> ClassifierRunner:
        return await _remembered(self._classifier_runners, self._models.load_classifier, model, tenant_id)

    async def _admitted(self, principal: Principal, model: str, kind: str) -> tuple[str, ActivePolicy]:
        tenant_id = self._tenant(principal)
        active = self._remembered_policy(tenant_id) if self._remembered_policy is not None else None
        models = self._visible.get(tenant_id) if active is not None else None
        if active is None or models is None or model not in {m.name for m in models}:
            return await anyio.to_thread.run_sync(self._admit, principal, model, kind)
        return tenant_id, self._check_model(tenant_id, active, models, model, kind)

    def _check_model(
        self, tenant_id: str, active: ActivePolicy, models: list[ModelInfo], model: str, kind: str
    ) -> ActivePolicy:
        self._rate_limit(tenant_id, active.policy.limits.requests_per_minute)
        info = {m.name: m for m in models if active.policy.allows_model(m.name)}.get(model)  # the last wins
        if info is None:
            raise NotFound(f"the model {model!r} does not exist or this tenant may not use it")
        if info.kind not in SERVED_BY[kind]:
            raise InvalidInput(f"the model {model!r} is a {info.kind} model, not a {kind} model")
        return active

    def _admit(self, principal: Principal, model: str, kind: str) -> tuple[str, ActivePolicy]:
        tenant_id = self._tenant(principal)
        active = self._policies(tenant_id)
        models = self._registered(tenant_id)
        if model not in {m.name for m in models}:  # registered since the list was read?
            models = self._registered(tenant_id, fresh=True)
        return tenant_id, self._check_model(tenant_id, active, models, model, kind)

    async def _anonymize(
        self,
        principal: Principal,
        action: str,
        model: str,
        active: ActivePolicy,
        texts: list[str],
        scope: str | None,
        started: float,
    ) -> Anonymized:
        tenant_id = self._tenant(principal)
        ttl = timedelta(hours=active.policy.retention.vault_ttl_hours)
        try:
            if self._anonymizer is not None:
                return await self._anonymizer.anonymize(AnonymizeCall(tenant_id, texts, active.policy.pii, scope, ttl))
            return await anyio.to_thread.run_sync(
                lambda: self._privacy.anonymize(tenant_id, texts, active.policy.pii, scope=scope, ttl=ttl)
            )
        except Blocked as exc:
            metrics.BLOCKED_REQUESTS.labels(action).inc()
            await self._record(
                principal,
                action,
                model=model,
                policy_version=active.version,
                outcome="blocked",
                started=started,
                facts={"blocked_types": exc.entity_types},
            )
            raise

    async def _record(
        self,
        principal: Principal,
        action: str,
        *,
        model: str,
        policy_version: int | None,
        outcome: str,
        started: float,
        facts: dict[str, Any],
        payload: bytes | None = None,
        payload_days: int = 0,
    ) -> None:
        """One audit entry; raises AuditUnavailable (503) if it cannot be written."""
        fields: dict[str, Any] = {
            "actor": principal,
            "tenant_id": principal.tenant_id,
            "object": model,
            "outcome": outcome,
            "policy_version": policy_version,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "facts": facts,
            "payload": payload,
            "payload_expires_at": utcnow() + timedelta(days=payload_days) if payload is not None else None,
        }
        if self._audit_writer is not None:
            await self._audit_writer.record(action, **fields)
        else:
            await anyio.to_thread.run_sync(lambda: self._audit.record(action, **fields))

    @staticmethod
    def _payload(policy: Policy, request: Any, answer: str | None) -> bytes | None:
        """Kept only when the tenant's retention asks for it; the audit log seals it."""
        if policy.retention.payload_days <= 0:
            return None
        return json.dumps({"request": request, "response": answer}).encode("utf-8")

    def _scrub(self, tenant_id: str, policy: Policy, text: str) -> str:
        if not policy.egress.scan_output or not text:
            return text
        rules = output_rules(policy.pii, policy.egress.output_action)
        return self._privacy.anonymize(tenant_id, [text], rules).texts[0]

    # -- chat --------------------------------------------------------------------------

    async def _prepare_chat(
        self, principal: Principal, call: ChatCall, action: str, started: float
    ) -> tuple[str, ActivePolicy, ChatRunner, ChatRequest, Anonymized]:
        tenant_id, active = await self._admitted(principal, call.model, "chat")
        policy = active.policy
        if call.max_tokens is not None and call.max_tokens > policy.limits.max_tokens:
            raise InvalidInput(f"max_tokens may be at most {policy.limits.max_tokens} under this tenant's policy")
        anonymized = await self._anonymize(
            principal, action, call.model, active, [m.content for m in call.messages], call.scope, started
        )
        runner = await self._chat_runner(call.model, tenant_id)
        # What the caller left out comes from the model; the policy caps the default length.
        defaults = self._models.sampling(runner).capped(policy.limits.max_tokens)
        request = ChatRequest(
            messages=[ChatMessage(m.role, t) for m, t in zip(call.messages, anonymized.texts, strict=True)],
            max_tokens=call.max_tokens if call.max_tokens is not None else defaults.max_tokens,
            temperature=call.temperature if call.temperature is not None else defaults.temperature,
            top_p=call.top_p if call.top_p is not None else defaults.top_p,
            stop=call.stop,
            seed=call.seed,
        )
        if isinstance(runner, UpstreamRunner):
            request = UpstreamChatRequest.of(request, await self._left_to_engine(tenant_id, call))
        return tenant_id, active, runner, request, anonymized

    async def _left_to_engine(self, tenant_id: str, call: ChatCall) -> frozenset[str]:
        """The sampling fields an upstream engine chooses itself: those neither the call nor the
        model's registration (``default_temperature``, ``default_top_p``) sets. Its built-in
        fallback (OpenAI's temperature 1) would override the engine's generation config."""
        models = self._visible.get(tenant_id)
        if models is None:  # a cache that keeps nothing: read the registry off the event loop
            models = await anyio.to_thread.run_sync(self._registered, tenant_id)
        options = next((m.options for m in reversed(models) if m.name == call.model), {})  # the last wins
        sent = {"temperature": call.temperature, "top_p": call.top_p}
        return frozenset(f for f in ENGINE_SAMPLING if sent[f] is None and f"default_{f}" not in options)

    def _egress(self, tenant_id: str, policy: Policy, scope: str | None, text: str) -> str:
        text = self._scrub(tenant_id, policy, text)
        if policy.egress.restore_pseudonyms and scope is not None:
            text = self._privacy.restore(tenant_id, scope, text)
        return text

    async def chat(self, principal: Principal, call: ChatCall) -> ChatAnswer:
        started = time.perf_counter()
        action = "chat.completion"
        tenant_id, active, runner, request, anonymized = await self._prepare_chat(principal, call, action, started)
        with metrics.MODEL_LATENCY.labels(call.model, "chat").time():
            result = await runner.complete(request)
        self._count_tokens(call.model, result.usage)
        text = await anyio.to_thread.run_sync(self._egress, tenant_id, active.policy, anonymized.scope, result.text)
        payload = self._payload(active.policy, [m.__dict__ for m in call.messages], text)
        # Audit must succeed before the answer leaves: AuditUnavailable fails the request.
        await self._record(
            principal,
            action,
            model=call.model,
            policy_version=active.version,
            outcome="ok",
            started=started,
            facts={
                "entities": anonymized.audit_facts(),
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "finish": result.finish_reason,
            },
            payload=payload,
            payload_days=active.policy.retention.payload_days,
        )
        return ChatAnswer(f"chatcmpl-{uuid.uuid4().hex}", call.model, text, result.finish_reason, result.usage)

    async def chat_stream(self, principal: Principal, call: ChatCall) -> ChatStream:
        """Everything that can refuse the request happens here, before the caller sees a byte."""
        started = time.perf_counter()
        action = "chat.completion.stream"
        tenant_id, active, runner, request, anonymized = await self._prepare_chat(principal, call, action, started)
        policy = active.policy
        upstream = cast(AsyncGenerator[ChatChunk, None], runner.stream(request))
        try:
            first = await upstream.__anext__()  # queue admission and model errors surface now
            await self._record(
                principal,
                action,
                model=call.model,
                policy_version=active.version,
                outcome="started",
                started=started,
                facts={"entities": anonymized.audit_facts()},
            )
        except BaseException:
            await upstream.aclose()  # refused after admission: free the model's slot
            raise
        scope = anonymized.scope
        restorer = (
            self._privacy.stream_restorer(tenant_id, scope)
            if policy.egress.restore_pseudonyms and scope is not None
            else None
        )
        stream = ChatStream(f"chatcmpl-{uuid.uuid4().hex}", call.model, _empty())

        async def chunks() -> AsyncGenerator[ChatChunk, None]:
            chunk: ChatChunk | None = first
            try:
                while chunk is not None:
                    text = chunk.text
                    if policy.egress.scan_output and text:  # NER is CPU work: off the loop, only when asked
                        text = await anyio.to_thread.run_sync(self._scrub, tenant_id, policy, text)
                    if restorer is not None:
                        text = restorer.feed(text) + (restorer.flush() if chunk.finish_reason else "")
                    if chunk.usage is not None:
                        stream.usage = chunk.usage
                        self._count_tokens(call.model, chunk.usage)
                    yield ChatChunk(text, chunk.finish_reason, chunk.usage)
                    if chunk.finish_reason is not None:
                        return
                    chunk = await upstream.__anext__()
            finally:
                await upstream.aclose()  # a disconnected caller stops the generation
                metrics.MODEL_LATENCY.labels(call.model, "chat").observe(time.perf_counter() - started)

        stream.chunks = chunks()
        return stream

    @staticmethod
    def _count_tokens(model: str, usage: Usage) -> None:
        metrics.MODEL_TOKENS.labels(model, "prompt").inc(usage.prompt_tokens)
        metrics.MODEL_TOKENS.labels(model, "completion").inc(usage.completion_tokens)

    # -- embeddings and classifications -------------------------------------------------

    async def _one_pass(
        self,
        principal: Principal,
        model: str,
        kind: str,
        action: str,
        texts: list[str],
        scope: str | None,
        runner: Callable[[str, str], Awaitable[R]],
        call: Callable[[R, list[str]], Awaitable[T]],
    ) -> T:
        """The flow of a call that is one model pass over texts: admit, anonymize, ``call``
        the ``runner``, audit. No egress step: the answers (vectors, label scores) hold no
        text for pseudonyms to be restored into."""
        started = time.perf_counter()
        tenant_id, active = await self._admitted(principal, model, kind)
        anonymized = await self._anonymize(principal, action, model, active, texts, scope, started)
        loaded = await runner(model, tenant_id)
        with metrics.MODEL_LATENCY.labels(model, kind).time():
            result = await call(loaded, anonymized.texts)
        metrics.MODEL_TOKENS.labels(model, "prompt").inc(result.prompt_tokens)
        await self._record(
            principal,
            action,
            model=model,
            policy_version=active.version,
            outcome="ok",
            started=started,
            facts={"entities": anonymized.audit_facts(), "inputs": len(texts), "prompt_tokens": result.prompt_tokens},
        )
        return result

    async def embed(self, principal: Principal, model: str, texts: list[str], scope: str | None = None) -> EmbedAnswer:
        result = await self._one_pass(
            principal,
            model,
            "embedding",
            "embeddings",
            texts,
            scope,
            self._embedding_runner,
            lambda runner, items: runner.embed(items),  # not EmbeddingRunner.embed: that is the Protocol's stub
        )
        return EmbedAnswer(model, result.vectors, result.prompt_tokens)

    # -- classification ----------------------------------------------------------------

    async def classify(
        self, principal: Principal, model: str, texts: list[str], top_k: int | None = None, scope: str | None = None
    ) -> ClassifyAnswer:
        """Classify ``texts`` with a tenant's classifier; the model sees only the anonymized text.

        Unlike chat there is no egress step: the answer holds the model's own label names
        and scores, never text derived from the caller's input, so there are no pseudonyms
        to restore and nothing for an output scan to find. ``top_k`` cuts each item's label
        list (the top label and its score are always given).
        """
        if top_k is not None and top_k < 1:
            raise InvalidInput("top_k must be at least 1")

        result = await self._one_pass(
            principal,
            model,
            "classifier",
            "classifications",
            texts,
            scope,
            self._classifier_runner,
            lambda runner, items: runner.classify(items),
        )
        items = result.items if top_k is None else [replace(i, labels=i.labels[:top_k]) for i in result.items]
        return ClassifyAnswer(model, items, result.prompt_tokens)


async def _remembered(
    cache: TtlCache[tuple[str, str], R], load: Callable[[str, str], Awaitable[R]], model: str, tenant_id: str
) -> R:
    """The manager's runner for (tenant, model), remembered a few seconds: looking it up
    reads the registry, a database query per request otherwise. A runner the manager closes
    meanwhile is not stored (the generation changed) nor handed out (it was discarded)."""
    runner = cache.get((tenant_id, model))
    if runner is None:
        generation = cache.generation
        runner = await load(model, tenant_id)
        cache.put((tenant_id, model), runner, generation)
    return runner


async def _empty() -> AsyncGenerator[ChatChunk, None]:
    return
    yield  # pragma: no cover

"""OpenAI-compatible surface (``/v1``): switch an app over by changing ``base_url`` and the key.

Thin: validate the OpenAI-shaped body, hand a ChatCall to the inference service, shape the
answer (JSON or server-sent events). Options that would change the answer and are not
supported are refused with a clear 422 rather than silently ignored; sampling penalties and
bookkeeping fields frameworks send with neutral values are accepted and ignored.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

import anyio.to_thread
import msgspec
from litestar import Response, get, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import JSONBody
from litestar.response import Stream

from appliance.api.auth import roles
from appliance.api.deps import Svc
from appliance.api.routes.admin import AuthedRequest
from appliance.errors import InvalidInput
from appliance.models.base import ChatMessage
from appliance.roles import Role
from appliance.services.container import Services
from appliance.services.inference import ChatCall

MODEL_CALLERS = roles(Role.APP, Role.TENANT_ADMIN)
CONVERSATION_HEADER = "x-conversation-id"


class ModelCard(msgspec.Struct):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "appliance"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    text: str


class Message(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False


class ChatBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1, max_length=1000)]
    # Omitted (or null) sampling fields take the model's defaults, not OpenAI's (docs/models.md).
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] = 1
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    presence_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, msgspec.Meta(ge=-2, le=2)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    # Sent by frameworks with neutral values; nothing here depends on them. Completions are
    # never kept for the caller (``store``), and there are no service tiers.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None


class EmbeddingsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    input: str | Annotated[list[Any], msgspec.Meta(min_length=1, max_length=2048)]  # checked by _texts
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class ClassificationsBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    input: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=2048)]
    top_k: Annotated[int, msgspec.Meta(ge=1)] | None = None
    user: Annotated[str, msgspec.Meta(max_length=256)] | None = None


def _to_call(body: ChatBody, conversation: str | None) -> ChatCall:
    if body.logprobs or body.top_logprobs:
        raise InvalidInput("logprobs are not supported")
    if body.logit_bias:
        raise InvalidInput("logit_bias is not supported")
    if body.tools or body.tool_choice not in (None, "none", "auto"):
        raise InvalidInput("tools are not supported by the local models")
    if body.modalities not in (None, ["text"]):
        raise InvalidInput("only text output is supported (modalities: ['text'])")
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise InvalidInput("only response_format type 'text' is supported")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return ChatCall(
        model=body.model,
        messages=[ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        seed=body.seed,
        scope=f"conversation:{conversation}" if conversation else None,
    )


async def _within_tenant_limit(request: AuthedRequest, services: Services) -> None:
    """The policy's ``limits.max_request_bytes`` (the server-wide limit applies before this)."""
    tenant_id = request.user.tenant_id
    length = request.headers.get("content-length")
    if tenant_id is None or length is None or not length.isdigit():
        return
    active = services.policies.remembered(tenant_id)
    if active is None:
        active = await anyio.to_thread.run_sync(services.policies.effective, tenant_id)
    limit = active.policy.limits.max_request_bytes
    if int(length) > limit:
        raise RequestEntityTooLarge(detail=f"this tenant's policy allows request bodies up to {limit} bytes")


def _conversation(request: AuthedRequest) -> str | None:
    value = request.headers.get(CONVERSATION_HEADER)
    if value is not None and not (1 <= len(value) <= 128 and value.isprintable()):
        raise InvalidInput(f"{CONVERSATION_HEADER} must be 1-128 printable characters")
    return value


@get("/v1/models", guards=[MODEL_CALLERS], sync_to_thread=True, tags=["openai"])
def list_models(request: AuthedRequest, services: Svc) -> ModelList:
    """Models this tenant may call under its policy."""
    return ModelList(data=[ModelCard(m.name) for m in services.inference.visible_models(request.user)])


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


@post("/v1/chat/completions", guards=[MODEL_CALLERS], tags=["openai"], status_code=200)
async def chat_completions(request: AuthedRequest, services: Svc, data: JSONBody[ChatBody]) -> Response[Any]:
    await _within_tenant_limit(request, services)
    call = _to_call(data, _conversation(request))
    created = int(time.time())
    if not data.stream:
        answer = await services.inference.chat(request.user, call)
        usage = answer.usage
        return Response(
            {
                "id": answer.id,
                "object": "chat.completion",
                "created": created,
                "model": answer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": answer.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
            }
        )
    stream = await services.inference.chat_stream(request.user, call)
    include_usage = bool(data.stream_options and data.stream_options.include_usage)

    async def events() -> AsyncIterator[bytes]:
        base = {"id": stream.id, "object": "chat.completion.chunk", "created": created, "model": stream.model}
        yield _sse(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
        async with aclosing(stream.chunks) as chunks:  # a disconnect cancels the model's work
            async for chunk in chunks:
                if chunk.text:
                    yield _sse(
                        {**base, "choices": [{"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}]}
                    )
                if chunk.finish_reason is not None:
                    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": chunk.finish_reason}]})
        if include_usage and stream.usage is not None:
            u = stream.usage
            yield _sse(
                {
                    **base,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": u.prompt_tokens,
                        "completion_tokens": u.completion_tokens,
                        "total_tokens": u.total_tokens,
                    },
                }
            )
        yield b"data: [DONE]\n\n"

    return Stream(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _texts(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if any(isinstance(t, int | list) and not isinstance(t, bool) for t in texts):
        # OpenAI also takes token ids from its own tokenizer; they mean nothing to these models.
        raise InvalidInput(
            "input holds token ids; send the text itself (with LangChain's OpenAIEmbeddings, "
            "set check_embedding_ctx_length=False)"
        )
    if not all(isinstance(t, str) for t in texts):
        raise InvalidInput("input must be a string or a list of strings")
    if any(not t for t in texts):
        raise InvalidInput("input strings must not be empty")
    return texts


def _b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@post("/v1/embeddings", guards=[MODEL_CALLERS], tags=["openai"], status_code=200)
async def embeddings(request: AuthedRequest, services: Svc, data: JSONBody[EmbeddingsBody]) -> dict[str, Any]:
    await _within_tenant_limit(request, services)
    if data.dimensions is not None and data.dimensions < 1:
        raise InvalidInput("dimensions must be at least 1")
    answer = await services.inference.embed(request.user, data.model, _texts(data.input), _conversation(request))
    native = len(answer.vectors[0])
    if data.dimensions is not None and data.dimensions != native:
        # Cutting a vector short is only meaningful for models trained for it; these are not.
        raise InvalidInput(f"model {answer.model!r} returns {native} dimensions; omit dimensions or send {native}")
    encode = _b64 if data.encoding_format == "base64" else (lambda v: v)
    return {
        "object": "list",
        "model": answer.model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(answer.vectors)],
        "usage": {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens},
    }


@post("/v1/classifications", guards=[MODEL_CALLERS], tags=["openai"], status_code=200)
async def classifications(request: AuthedRequest, services: Svc, data: JSONBody[ClassificationsBody]) -> dict[str, Any]:
    """Labels from a classifier model, in the OpenAI list shape (not an OpenAI endpoint)."""
    await _within_tenant_limit(request, services)
    texts = _texts(data.input)
    answer = await services.inference.classify(request.user, data.model, texts, data.top_k, _conversation(request))
    return {
        "object": "list",
        "model": answer.model,
        "data": [
            {
                "object": "classification",
                "index": i,
                "label": item.label,
                "score": item.score,
                "labels": [{"label": s.label, "score": s.score} for s in item.labels],
            }
            for i, item in enumerate(answer.items)
        ],
        "usage": {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens},
    }

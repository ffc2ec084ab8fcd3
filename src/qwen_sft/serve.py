"""`qwen-sft serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with continuous batching.

Routes: `GET /health` (no key needed), `GET /v1/models`, `POST /v1/chat/completions` (streaming or not) and
the spec's `POST /nlg/text_generate`, which answers `{"response": ...}` with the answer only (the spec's
post_api.py returned the prompt inside it). Prompts are rendered by `template.encode_prompt`, the rendering
training uses; generation runs in `serve_engine.Engine`, which batches concurrent requests.

Client mistakes (bad JSON, wrong types, limits, auth, oversized bodies) get a 4xx with an OpenAI-style
body `{"error": {"message", "type", "param", "code"}}`; a 5xx means a server fault or overload.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import aclosing, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Iterator, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from qwen_sft.data import to_messages
from qwen_sft.errors import UserError
from qwen_sft.serve_engine import Delta, Engine, Failed, Finished, QueueFull, Sampling
from qwen_sft.template import Template, encode_prompt, get_template, stop_token_ids

log = logging.getLogger(__name__)
OPEN_PATHS = {"/health"}  # everything else needs the API key when one is set
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)  # "5" is not an int, "true" is not a bool


# ---- request / response schema (OpenAI names) ----
class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """Other OpenAI fields (presence_penalty, logprobs, tools, ...) are accepted and ignored."""

    model_config = _STRICT
    model: str | None = Field(None, description="Ignored: the server serves one model")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, description="Default: as many as the limit and context allow")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens; wins if both")
    stop: str | list[str] | None = Field(None, description="Up to 4 non-empty strings; not part of the answer")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported")


class TextGenerateRequest(BaseModel):
    """The spec's post_api.py request. The prompt is `instruction`, plus `\\n` + `text` when given (the alpaca
    mapping training uses). `num_beams` and `penalty_alpha` are accepted and ignored: every request is
    decoded greedily or by sampling in the shared batch (beam and contrastive search cannot share it)."""

    model_config = _STRICT
    instruction: str = ""
    text: str = ""
    max_new_tokens: int = Field(128, ge=1, description="Default 128, capped at the server's limit")
    temperature: float = Field(0.8, ge=0, le=100)
    do_sample: bool = True
    num_beams: int = Field(1, ge=1, description="Ignored")
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(50, ge=0, description="0 = no top-k cut")
    penalty_alpha: float = Field(1.0, ge=0, description="Ignored")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen-sft"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TextGenerateResponse(BaseModel):
    response: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type


def error_response(status: int, message: str, param=None, code=None, type="invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 413, 500, 503)}
STREAM_OR_JSON = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}


# ---- the app ----
def create_app(model, tokenizer, template: Template | str = "qwen", *, served_model_name: str = "qwen-sft",
               api_key: str | None = None, max_batch: int = 32, max_tokens_limit: int = 2048,
               max_model_len: int | None = None, max_body_bytes: int = 1 << 20, max_queue: int = 256) -> FastAPI:
    """Build the server around a loaded model; the engine thread starts with the first request.

    Args:
        model: a causal LM in eval mode (`qwen_sft.model.load_model`).
        tokenizer: its tokenizer.
        template: a `Template` or its name.
        served_model_name: the id `/v1/models` lists and responses carry.
        api_key: when set, every route but /health needs `Authorization: Bearer KEY`.
        max_batch: most sequences decoded together.
        max_tokens_limit: ceiling on max_tokens / max_new_tokens.
        max_model_len: context length (prompt + answer); default: the model's max_position_embeddings.
        max_body_bytes: larger request bodies get 413.
        max_queue: requests waiting beyond the batch; more get 503.
    """
    template = get_template(template) if isinstance(template, str) else template
    context = max_model_len or getattr(model.config, "max_position_embeddings", 32768)
    engine = Engine(model, tokenizer, stop_token_ids(tokenizer), max_batch=max_batch, max_queue=max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(engine.stop)  # fails what is still queued, joins the worker

    # strict_content_type=False: a JSON body without a Content-Type header is still read as JSON
    app = FastAPI(title="qwen-sft", lifespan=lifespan, docs_url=None, redoc_url=None, strict_content_type=False)
    app.state.engine = engine
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    _add_error_handlers(app)

    def budget(prompt_len: int, requested: int | None, param: str, default: int = max_tokens_limit) -> int:
        """Tokens this request may generate (unset: `default`, within the context). Raises ApiError naming the
        limit it breaks."""
        if requested is not None and requested > max_tokens_limit:
            raise ApiError(400, f"{param}={requested} is above this server's limit of {max_tokens_limit}",
                           param, "max_tokens_exceeded")
        room = context - prompt_len
        if room < 1:
            raise ApiError(400, f"the prompt has {prompt_len} tokens; this model's context is {context} tokens",
                           "messages", "context_length_exceeded")
        if requested is not None and requested > room:
            raise ApiError(400, f"the prompt's {prompt_len} tokens plus {param}={requested} exceed this model's "
                                f"context of {context} tokens", param, "context_length_exceeded")
        return requested or min(default, max_tokens_limit, room)

    async def start(messages: list[dict], requested: int | None, param: str, sampling: Sampling, stop=(),
                    default: int = max_tokens_limit):
        prompt = await asyncio.to_thread(encode_prompt, messages, tokenizer, template)  # long prompts: off the loop
        try:
            return engine.generate(prompt, budget(len(prompt), requested, param, default), sampling, stop)
        except QueueFull as err:
            raise ApiError(503, str(err), code="server_busy", type="server_error") from None

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served_model_name}

    @app.get("/v1/models", responses=ERRORS)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=served_model_name, created=created)])

    @app.post("/v1/chat/completions", responses={**ERRORS, **STREAM_OR_JSON})
    async def chat_completions(body: ChatCompletionRequest) -> ChatCompletion:
        stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
        if len(stops) > 4 or not all(stops):
            raise ApiError(400, "stop: give at most 4 non-empty strings", "stop", "invalid_stop")
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        sampling = Sampling(temperature=body.temperature, top_p=body.top_p, seed=body.seed)
        events = await start(messages, body.max_completion_tokens or body.max_tokens, param, sampling, tuple(stops))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served_model_name}
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(events, head, usage), media_type="text/event-stream")
        text, done = await _collect(events)
        return ChatCompletion(**head, choices=[Choice(index=0, message=AssistantMessage(content=text),
                                                      finish_reason=done.reason)], usage=_usage(done))

    @app.post("/nlg/text_generate", responses=ERRORS)
    async def text_generate(body: TextGenerateRequest) -> TextGenerateResponse:
        messages = to_messages({"instruction": body.instruction, "input": body.text}, "alpaca")[:-1]
        # unset: the spec's default, 128, within this server's limit and context; set above the limit: 400
        requested = body.max_new_tokens if "max_new_tokens" in body.model_fields_set else None
        sampling = Sampling(temperature=body.temperature if body.do_sample else 0.0, top_p=body.top_p,
                            top_k=body.top_k)
        text, _ = await _collect(await start(messages, requested, "max_new_tokens", sampling, default=128))
        return TextGenerateResponse(response=text)

    return app


async def _collect(events) -> tuple[str, Finished]:
    """The whole answer of a non-streaming request. Raises ApiError if generation failed."""
    parts = []
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Failed):
                raise ApiError(503, event.message, code="generation_failed", type="server_error")
            else:
                return "".join(parts), event
    raise ApiError(503, "generation ended without a result", type="server_error")


def _usage(done: Finished) -> dict:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


async def _sse(events, head: dict, include_usage: bool):
    """OpenAI `chat.completion.chunk` events; closing this (client gone) cancels the request."""
    def chunk(delta: dict, finish=None, **extra) -> str:
        body = {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Finished):
                yield chunk({}, event.reason)
                if include_usage:
                    body = {**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(event)}
                    yield f"data: {json.dumps(body)}\n\n"
            else:
                body = {"error": {"message": event.message, "type": "server_error", "param": None, "code": None}}
                yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err.status, err.message, err.param, err.code, err.type)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):  # OpenAI answers 400, not FastAPI's 422
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(400, "request body is not valid JSON", None, "invalid_json")
        # pydantic puts the union member tried ("str", "list[TextPart]") in the location: not a request field
        where = ".".join(str(x) for x in first.get("loc", ())[1:]
                         if not (isinstance(x, str) and (x in ("str", "int", "float", "bool") or "[" in x)))
        if not where:  # the body as a whole: a JSON array, or a form post from `curl -d` without -H
            return error_response(400, "the request body must be a JSON object (Content-Type: application/json)",
                                  None, first.get("type"))
        return error_response(400, f"{where}: {first.get('msg')}", where, first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), code=f"http_{err.status_code}")

    @app.exception_handler(Exception)
    async def crash(request, err: Exception):  # a server bug: say so, keep serving
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error", type="server_error")


class Guard:
    """ASGI middleware run before routing: API key, then body size (Content-Length and the bytes actually
    received, for chunked uploads). The body is buffered (at most max_body_bytes) and replayed to the app."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key and scope["path"] not in OPEN_PATHS and not self._authorized(headers.get(b"authorization", b"")):
            return await error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                        code="invalid_api_key", type="authentication_error")(scope, receive, send)
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            return await error_response(400, "invalid Content-Length header")(scope, receive, send)
        if int(declared) > self.max_body_bytes:
            return await self._too_large(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await self._too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: disconnect notices for streaming responses

        await self.app(scope, replay, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)

    async def _too_large(self, scope, receive, send):
        message = f"request body is larger than this server's limit of {self.max_body_bytes} bytes"
        await error_response(413, message, code="request_too_large")(scope, receive, send)


# ---- the command ----
def serve(*, model: str | None = None, adapter: str | None = None, template: str | None = None, host: str = "127.0.0.1",
          port: int = 8036, api_key: str | None = None, max_batch: int = 32, max_tokens_limit: int = 2048,
          max_model_len: int | None = None, max_body_bytes: int = 1 << 20, dtype: str = "auto",
          served_model_name: str | None = None) -> int:
    """Serve a model over an OpenAI-compatible HTTP API (plus the spec's /nlg/text_generate).

    Args:
        model: model dir, hub id or `tiny` (default: the adapter's base model, else `tiny`).
        adapter: LoRA/DoRA adapter dir written by `qwen-sft train`.
        template: chat template; default: the adapter's (or model dir's) run_config.yaml, else `auto`.
        host: interface to bind; anything but 127.0.0.1 exposes the server to the network.
        port: TCP port.
        api_key: require `Authorization: Bearer KEY` (default: $QWEN_SFT_API_KEY; none = no auth).
        max_batch: most sequences decoded together.
        max_tokens_limit: ceiling on max_tokens per request.
        max_model_len: context length (prompt + answer); default: the model's.
        max_body_bytes: request bodies above this get 413.
        dtype: auto | bf16 | fp32.
        served_model_name: model id shown by /v1/models (default: the model or adapter dir name).

    Raises:
        UserError: bad limits, a busy port, or a model/adapter/template that cannot be loaded.
    """
    import uvicorn

    from qwen_sft.generate import load_for_inference  # the base and template rules predict and chat use

    for name, value in (("max-batch", max_batch), ("max-tokens-limit", max_tokens_limit),
                        ("max-model-len", max_model_len or 1), ("max-body-bytes", max_body_bytes)):
        if value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    _check_port_free(host, port)
    api_key = api_key or os.environ.get("QWEN_SFT_API_KEY") or None
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", host)
    lm, tokenizer, template_obj = load_for_inference(model, adapter, template, dtype)
    name = served_model_name or Path(adapter or model or "tiny").name
    app = create_app(lm, tokenizer, template_obj, served_model_name=name, api_key=api_key, max_batch=max_batch,
                     max_tokens_limit=max_tokens_limit, max_model_len=max_model_len, max_body_bytes=max_body_bytes)
    log.info("serving %s (template %s%s) on http://%s:%d", name, template_obj.name,
             ", API key required" if api_key else "", host, port)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let open requests finish (5 s), then the app's shutdown.
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5, log_level="info")).run()
    return 0


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn on a background thread (tests, benchmarks); yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _check_port_free(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
            sock.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port or --host") from None

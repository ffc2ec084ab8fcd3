"""The OpenAI-compatible app: `GET /health` (no key needed), `GET /v1/models`, `POST /v1/chat/completions`
(streaming or not) and qwen1.5-sft's `POST /nlg/text_generate`, which answers `{"response": ...}` with the answer
only (its post_api.py returned the prompt inside it).

Prompts are rendered by the template layer (`server.prompt`), as training renders them; generation runs in
`generation.AsyncEngine`, which batches concurrent requests. Sampling fields a request leaves unset take the
checkpoint's generation_config.json values (as vLLM does), else OpenAI's defaults.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from qwen_sft.data.records import to_messages
from qwen_sft.generation import AsyncEngine, QueueFull, SamplingParams, from_generation_config
from qwen_sft.server.errors import ERRORS, ApiError, add_error_handlers
from qwen_sft.server.guard import Guard
from qwen_sft.server.output import ClientGone, LogprobFormatter, collect, sse, usage
from qwen_sft.server.prompt import encode_chat, split_tool_calls, template_messages
from qwen_sft.server.schema import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ModelCard,
    ModelList,
    TextGenerateRequest,
    TextGenerateResponse,
)
from qwen_sft.template.encode import stop_token_ids
from qwen_sft.template.registry import get_template
from qwen_sft.template.render import Template
from qwen_sft.utils.errors import UserError

STREAM_OR_JSON = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}
OPENAI_DEFAULTS = SamplingParams(temperature=1.0)  # OpenAI's API samples at temperature 1 unless told otherwise
CHAT_SAMPLING = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
                 "seed")


def create_app(model, tokenizer, template: Template | str = "qwen", *, served_model_name: str = "qwen-sft",
               api_key: str | None = None, max_batch: int = 32, max_tokens_limit: int = 2048,
               max_model_len: int | None = None, max_body_bytes: int = 1 << 20, max_queue: int = 256,
               generation_config: str = "auto") -> FastAPI:
    """Build the server around a loaded model; the engine thread starts with the first request.

    Args:
        model: a causal LM in eval mode (`qwen_sft.model.load_model`).
        tokenizer: its tokenizer.
        template: a `Template` or its name.
        served_model_name: the id `/v1/models` lists and responses carry.
        api_key: when set, every route but /health needs `Authorization: Bearer KEY`.
        max_batch: most sequences decoded together (also the most choices `n` one request may ask for).
        max_tokens_limit: ceiling on max_tokens / max_new_tokens.
        max_model_len: context length (prompt + answer); default: the model's max_position_embeddings.
        max_body_bytes: larger request bodies get 413.
        max_queue: requests waiting beyond the batch; more get 503.
        generation_config: `auto` = sampling defaults from the checkpoint's generation_config.json;
            `none` = OpenAI's defaults only.

    Raises:
        UserError: an unknown generation_config mode.
    """
    if generation_config not in ("auto", "none"):
        raise UserError(f"generation_config: auto or none, got {generation_config!r}")
    template = get_template(template) if isinstance(template, str) else template
    context = max_model_len or getattr(model.config, "max_position_embeddings", 32768)
    engine = AsyncEngine(model, tokenizer, stop_token_ids(tokenizer), max_batch=max_batch, max_queue=max_queue)
    checkpoint = getattr(model, "generation_config", None) if generation_config == "auto" else None
    defaults = from_generation_config(checkpoint, OPENAI_DEFAULTS.replace(max_new_tokens=max_tokens_limit))
    logprobs = LogprobFormatter(tokenizer)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(engine.stop)  # fails what is still queued, joins the worker

    # strict_content_type=False: a JSON body without a Content-Type header is still read as JSON
    app = FastAPI(title="qwen-sft", lifespan=lifespan, docs_url=None, redoc_url=None, strict_content_type=False)
    app.state.engine, app.state.defaults = engine, defaults
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    add_error_handlers(app)

    def budget(prompt_len: int, requested: int | None, param: str, default: int) -> int:
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

    async def start(messages: list[dict], requested: int | None, param: str, params: SamplingParams, default: int,
                    tools=None):
        prompt = await asyncio.to_thread(encode_chat, messages, tokenizer, template, tools)  # long prompts: off the loop
        params = params.replace(max_new_tokens=budget(len(prompt), requested, param, default))
        try:
            return engine.generate(prompt, params)
        except QueueFull as err:
            raise ApiError(503, str(err), code="server_busy", type="server_error") from None

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": served_model_name}

    @app.get("/v1/models", responses=ERRORS)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=served_model_name, created=created)])

    @app.post("/v1/chat/completions", responses={**ERRORS, **STREAM_OR_JSON})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> ChatCompletion:
        params = chat_params(body, defaults, max_batch)
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        messages = template_messages(body.messages)
        offered = body.tools and body.tool_choice != "none"
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if offered else None
        if tools and body.stream:
            raise ApiError(400, "stream: tool calls are parsed from the whole answer; use stream: false with tools",
                           "stream", "unsupported")
        events = await start(messages, body.max_completion_tokens or body.max_tokens, param, params,
                             defaults.max_new_tokens, tools)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": served_model_name}
        formatter = logprobs if params.logprobs else None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(sse(events, head, params.n, include_usage, formatter),
                                     media_type="text/event-stream")
        try:
            answers = await collect(events, params.n, request.receive)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        choices = []
        for i, answer in enumerate(answers):
            message, reason = _message("".join(answer.text), answer, tools)
            logprobs_out = ChoiceLogprobs(content=formatter.content(answer.logprobs)) if formatter else None
            choices.append(Choice(index=i, message=message, finish_reason=reason, logprobs=logprobs_out))
        spent = sum(a.done.completion_tokens for a in answers)
        return ChatCompletion(**head, choices=choices, usage=usage(answers[0].done.prompt_tokens, spent))

    @app.post("/nlg/text_generate", responses=ERRORS)
    async def text_generate(body: TextGenerateRequest, request: Request) -> TextGenerateResponse:
        messages = to_messages({"instruction": body.instruction, "input": body.text}, "alpaca")[:-1]
        # unset: qwen1.5-sft's default, 128, within this server's limit and context; set above the limit: 400
        requested = body.max_new_tokens if "max_new_tokens" in body.model_fields_set else None
        params = defaults.replace(temperature=body.temperature if body.do_sample else 0.0, top_p=body.top_p,
                                  top_k=body.top_k)
        events = await start(messages, requested, "max_new_tokens", params, default=128)
        try:
            answer, = await collect(events, 1, request.receive)
        except ClientGone:
            return Response(status_code=499)
        return TextGenerateResponse(response="".join(answer.text))

    return app


def _message(text: str, answer, tools) -> tuple[AssistantMessage, str]:
    """The assistant message and finish reason of one choice; with tools offered, calls are parsed out."""
    if not tools:
        return AssistantMessage(content=text), answer.done.reason
    content, calls = split_tool_calls(text)
    if not calls:
        return AssistantMessage(content=text), answer.done.reason
    return AssistantMessage(content=content, tool_calls=calls), "tool_calls"


def chat_params(body: ChatCompletionRequest, defaults: SamplingParams, max_batch: int) -> SamplingParams:
    """The request's sampling settings over the server's defaults.

    Raises:
        ApiError: settings the schema alone cannot refuse (a 400 naming the field).
    """
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > 4 or not all(stops):
        raise ApiError(400, "stop: give at most 4 non-empty strings", "stop", "invalid_stop")
    if body.response_format is not None and body.response_format.type != "text":
        raise ApiError(400, f"response_format: only {{\"type\": \"text\"}} is supported, not "
                            f"{body.response_format.type!r} (no structured output)", "response_format", "unsupported")
    if body.top_logprobs and not body.logprobs:
        raise ApiError(400, "top_logprobs: needs logprobs: true", "top_logprobs", "invalid_value")
    if body.n > max_batch:
        raise ApiError(400, f"n={body.n} is above this server's limit of {max_batch} (--max-batch)", "n",
                       "n_exceeded")
    if body.tool_choice == "auto" and not body.tools:
        raise ApiError(400, "tool_choice: needs tools", "tool_choice", "invalid_value")
    given = {name: getattr(body, name) for name in CHAT_SAMPLING if getattr(body, name) is not None}
    if body.top_k is not None:
        given["top_k"] = max(body.top_k, 0)  # vLLM: -1 = off
    return defaults.replace(**given, stop=tuple(stops), n=body.n, logprobs=body.logprobs,
                            top_logprobs=body.top_logprobs or 0)

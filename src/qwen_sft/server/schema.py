"""Request and response bodies (OpenAI's names; vLLM's names for its extra sampling parameters).

Every request model forbids unknown fields: a field this server does not implement gets a 400 naming it
instead of a 200 that silently ignored it. Values are strict ("5" is not an int, "true" is not a bool).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: str
    arguments: str = Field(description="JSON object, as a string (OpenAI's wire format)")


class ToolCall(BaseModel):
    model_config = _STRICT
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """A turn. `assistant` turns may carry `tool_calls` (content null); `tool` turns answer one."""

    model_config = _STRICT
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict | None = None


class FunctionDef(BaseModel):
    model_config = _STRICT
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: FunctionDef


class ChatCompletionRequest(BaseModel):
    """Sampling fields left unset take the server's defaults: the checkpoint's generation_config.json values,
    else OpenAI's (temperature 1, top_p 1)."""

    model_config = _STRICT
    model: str | None = Field(None, description="Ignored: the server serves one model")
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, description="Default: as many as the limit and context allow")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens; wins if both")
    stop: str | list[str] | None = Field(None, description="Up to 4 non-empty strings; not part of the answer")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, description="Answers to generate (at most the server's --max-batch)")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Needs logprobs: true")
    response_format: ResponseFormat | None = Field(None, description='Only {"type": "text"} is supported')
    top_k: int | None = Field(None, ge=-1, description="vLLM extra: 0 or -1 = off")
    min_p: float | None = Field(None, ge=0, le=1, description="vLLM extra: 0 = off")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="vLLM extra: 1 = off")
    tools: list[ToolDef] | None = Field(None, description="Needs a template with a tool format (qwen2.5, qwen3)")
    tool_choice: Literal["none", "auto"] | None = Field(None, description="auto (default with tools): the model "
                                                                          "decides; none: no tools offered")
    user: str | None = Field(None, description="End-user id; not used for generation")


class TextGenerateRequest(BaseModel):
    """qwen1.5-sft's post_api.py request. The prompt is `instruction`, plus `\\n` + `text` when given (the alpaca
    mapping training uses). `num_beams` and `penalty_alpha` are accepted and ignored, for qwen1.5-sft's client:
    every request is decoded greedily or by sampling in the shared batch (beam and contrastive search cannot
    share it)."""

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


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: ChoiceLogprobs | None = None


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

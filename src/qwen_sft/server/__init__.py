"""`qwen-sft serve`'s HTTP layer: schema.py (request/response bodies), app.py (routes), output.py (answers,
server-sent events, logprobs), errors.py (OpenAI error bodies), guard.py (API key, body size), prompt.py (the
template hook: messages + tools → prompt ids)."""

from qwen_sft.server.app import create_app, running

__all__ = ["create_app", "running"]

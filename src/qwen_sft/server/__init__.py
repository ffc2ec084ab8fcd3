"""`qwen-sft serve`'s HTTP layer: schema.py (request/response bodies), app.py (routes), output.py (answers,
server-sent events, logprobs), errors.py (OpenAI error bodies), guard.py (API key, body size), prompt.py (the
template hook: messages + tools → prompt ids), net.py (port check, background server for tests)."""

from qwen_sft.server.app import create_app
from qwen_sft.server.net import check_port_free, running

__all__ = ["check_port_free", "create_app", "running"]

"""`qwen-sft serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) with continuous batching.

The app is `qwen_sft.server` (routes, schema, errors, auth); generation is `qwen_sft.generation`'s engine.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from qwen_sft.errors import UserError
from qwen_sft.server import create_app

log = logging.getLogger(__name__)


def serve(*, model: str | None = None, adapter: str | None = None, template: str | None = None, host: str = "127.0.0.1",
          port: int = 8036, api_key: str | None = None, max_batch: int = 32, max_tokens_limit: int = 2048,
          max_model_len: int | None = None, max_body_bytes: int = 1 << 20, dtype: str = "auto",
          served_model_name: str | None = None, generation_config: str = "auto") -> int:
    """Serve a model over an OpenAI-compatible HTTP API (plus the spec's /nlg/text_generate).

    Args:
        model: model dir, hub id or `tiny` (default: the adapter's base model, else `tiny`).
        adapter: LoRA/DoRA adapter dir written by `qwen-sft train`.
        template: chat template; default: the adapter's (or model dir's) run_config.yaml, else `qwen`.
        host: interface to bind; anything but 127.0.0.1 exposes the server to the network.
        port: TCP port.
        api_key: require `Authorization: Bearer KEY` (default: $QWEN_SFT_API_KEY; none = no auth).
        max_batch: most sequences decoded together.
        max_tokens_limit: ceiling on max_tokens per request.
        max_model_len: context length (prompt + answer); default: the model's.
        max_body_bytes: request bodies above this get 413.
        dtype: auto | bf16 | fp32.
        served_model_name: model id shown by /v1/models (default: the model or adapter dir name).
        generation_config: auto = request fields left unset take the checkpoint's generation_config.json
            sampling defaults (temperature, top_p, top_k, min_p, repetition_penalty, max_new_tokens; as vLLM);
            none = OpenAI's defaults.

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
                     max_tokens_limit=max_tokens_limit, max_model_len=max_model_len, max_body_bytes=max_body_bytes,
                     generation_config=generation_config)
    log.info("serving %s (template %s%s) on http://%s:%d", name, template_obj.name,
             ", API key required" if api_key else "", host, port)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let open requests finish (5 s), then the app's shutdown.
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5, log_level="info")).run()
    return 0


def _check_port_free(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be 0..65535, got {port}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "busy"
            sock.bind((host, port))
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pass another --port or --host") from None

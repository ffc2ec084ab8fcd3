"""Serve a model over an OpenAI-compatible HTTP API (plus qwen1.5-sft's /nlg/text_generate), batching requests."""

import contextlib
import logging
import os
from pathlib import Path

from qwen_sft.config.schema import Command, Config

COMMAND = Command(parts=("model", "serve"))
log = logging.getLogger(__name__)


def main(cfg: Config) -> int:
    import uvicorn

    from qwen_sft.model.inference import load_for_inference
    from qwen_sft.server import check_port_free, create_app

    opts = cfg.serve
    check_port_free(opts.host, opts.port)
    api_key = opts.api_key or os.environ.get("QWEN_SFT_API_KEY") or None
    if opts.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("serving on %s without --api_key: anyone who can reach this port can use the model", opts.host)
    model, tokenizer, template = load_for_inference(cfg.model)
    name = opts.served_model_name or Path(cfg.model.adapter or cfg.model.model or "tiny").name
    app = create_app(model, tokenizer, template, served_model_name=name, api_key=api_key, max_batch=opts.max_batch,
                     max_tokens_limit=opts.max_tokens_limit, max_model_len=opts.max_model_len,
                     max_body_bytes=opts.max_body_bytes)
    log.info("serving %s (template %s%s) on http://%s:%d", name, template.name,
             ", API key required" if api_key else "", opts.host, opts.port)
    # uvicorn handles SIGINT/SIGTERM: stop accepting, let open requests finish (5 s), then the app's shutdown.
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a clean shutdown: a normal stop
        uvicorn.Server(uvicorn.Config(app, host=opts.host, port=opts.port, timeout_graceful_shutdown=5,
                                      log_level="info")).run()
    return 0

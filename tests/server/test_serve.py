"""`qwen-sft serve`: the OpenAI client against a live loopback server, the spec's route, every class of
bad input, auth, a 32-client load test and batching invariance. The tiny model runs in fp32 so greedy
decoding is exactly reproducible; max_tokens stays small so the file runs in about a minute on 2 cores."""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch
from transformers import GenerationConfig

from qwen_sft.generation import Batch, Delta, Finished, Request, SamplingParams
from qwen_sft.server import create_app, running
from qwen_sft.template.encode import encode_prompt, stop_token_ids
from qwen_sft.template.registry import get_template

LIMIT = 16  # the server's max_tokens ceiling in these tests
CONTEXT = 256
BODY_LIMIT = 32 * 1024
KEY = "sk-test-7f3a9c"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


@pytest.fixture(scope="module")
def loaded(tiny_path):
    from qwen_sft.model.load import load_model, load_tokenizer

    return load_model(tiny_path, dtype="fp32"), load_tokenizer(tiny_path)


def make_app(loaded, template="qwen", **kwargs):
    model, tokenizer = loaded
    limits = dict(served_model_name="tiny", max_tokens_limit=LIMIT, max_model_len=CONTEXT, max_body_bytes=BODY_LIMIT)
    return create_app(model, tokenizer, template, **{**limits, **kwargs})


@pytest.fixture(scope="module")
def app(loaded):
    app = make_app(loaded)
    yield app
    app.state.engine.stop()


@pytest.fixture(scope="module")
def url(app):
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client


def chat(http, messages=HELLO, **params):
    r = http.post("/v1/chat/completions", json={"model": "tiny", "messages": messages, **params})
    assert r.status_code == 200, r.text
    return r.json()


# ---- the official openai client ----
def test_openai_client_sync_and_stream_agree(url):
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    done = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=10)
    choice = done.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    if choice.finish_reason == "length":
        assert done.usage.completion_tokens == 10

    stream = client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == choice.message.content and finish == [choice.finish_reason]
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_stream_is_server_sent_events_ending_in_done(http):
    with http.stream("POST", "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 4, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[0][6:])["choices"][0]["delta"]["role"] == "assistant"


def test_prompt_is_rendered_like_training(loaded, http):
    _, tokenizer = loaded
    expected = len(encode_prompt(HELLO, tokenizer, get_template("qwen")))
    assert chat(http, max_tokens=1)["usage"]["prompt_tokens"] == expected


def test_stop_string_cuts_the_answer(http):
    full = chat(http, temperature=0, max_tokens=LIMIT)["choices"][0]["message"]["content"]
    stop = full[4:7]
    assert stop, f"greedy answer too short to pick a stop string: {full!r}"
    cut = chat(http, temperature=0, max_tokens=LIMIT, stop=[stop, "never-appears"])["choices"][0]
    assert cut["message"]["content"] == full[: full.index(stop)] and cut["finish_reason"] == "stop"


def test_seed_makes_sampling_reproducible(http):
    answers = [chat(http, temperature=1.0, seed=seed, max_tokens=8)["choices"][0]["message"]["content"]
               for seed in (7, 7, 8)]
    assert answers[0] == answers[1] != answers[2]


@pytest.mark.parametrize("params", [{"temperature": 1e-300}, {"temperature": 2, "top_p": 1e-300},
                                    {"temperature": 2, "top_p": 0.5, "seed": 2**64 - 1}])
def test_extreme_sampling_values_are_served(http, params):  # 1e-300 once made inf logits and NaN probabilities
    assert chat(http, max_tokens=2, **params)["choices"][0]["finish_reason"] in ("stop", "length")


def test_engine_never_emits_padded_vocab_ids_and_stops_at_stop_tokens(loaded):
    model, tokenizer = loaded
    batch = Batch(model, tokenizer, stop_token_ids(tokenizer))
    events = []
    batch.submit(Request([1, 2, 3], SamplingParams(max_new_tokens=5), events.append))
    batch.step()  # prefill + one decoding step: the row is live
    row = next(r for r in batch.rows if r is not None)
    events.clear()
    logits = torch.zeros(1, model.config.vocab_size)
    logits[0, len(tokenizer) + 7] = 100.0  # a padded row (>= 151646) wins: it must not come out
    logits[0, 9707] = 1.0
    tokens, logprobs = batch.sampler.sample(logits, [row])
    assert tokens == [9707]
    batch._record([row], tokens, logprobs)
    assert events == [Delta(tokenizer.decode([9707]), token_ids=(9707,))]
    batch._record([row], [tokenizer.convert_tokens_to_ids("<|im_end|>")], [None])
    assert events[-1] == Finished("stop", prompt_tokens=3, completion_tokens=row.generated)
    assert "<|im_end|>" not in "".join(e.text for e in events if isinstance(e, Delta))
    assert batch.live == 0


# ---- the spec's route ----
def test_spec_route_returns_the_answer_only(http):
    body = {"instruction": "类型#裙*版型#宽松", "text": "颜色#黑色", "max_new_tokens": 8, "do_sample": False,
            "num_beams": 3, "penalty_alpha": 0.6}  # the last two are accepted and ignored (docs/serving.md)
    r = http.post("/nlg/text_generate", json=body)
    assert r.status_code == 200 and set(r.json()) == {"response"}
    greedy = chat(http, [{"role": "user", "content": "类型#裙*版型#宽松\n颜色#黑色"}], temperature=0, max_tokens=8)
    assert r.json()["response"] == greedy["choices"][0]["message"]["content"]
    assert "<|im_start|>" not in r.json()["response"] and "类型#裙" not in r.json()["response"]


# ---- bad input: 4xx with an OpenAI error body, never 5xx ----
def _messages(**extra):
    return json.dumps({"messages": HELLO, **extra})


BAD = {
    "malformed JSON": ('{"messages": [', 400, None),
    "not an object": ("[1, 2]", 400, None),
    "wrong type": (_messages(max_tokens="5"), 400, "max_tokens"),
    "wrong type (bool)": (_messages(stream="yes"), 400, "stream"),
    "empty messages": ('{"messages": []}', 400, "messages"),
    "missing messages": ("{}", 400, "messages"),
    "unknown role": ('{"messages": [{"role": "function", "content": "x"}]}', 400, "messages.0.role"),
    "tool turn for a template without tools": ('{"messages": [{"role": "tool", "content": "x"}]}', 400, "messages"),
    "content not text": ('{"messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
    "temperature out of range": (_messages(temperature=3), 400, "temperature"),
    "NaN": ('{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "temperature"),
    "max_tokens over the limit": (_messages(max_tokens=LIMIT + 1), 400, "max_tokens"),
    "max_tokens zero": (_messages(max_tokens=0), 400, "max_tokens"),
    "empty stop": (_messages(stop=""), 400, "stop"),
    "five stops": (_messages(stop=list("abcde")), 400, "stop"),
    "prompt over the context": (json.dumps({"messages": [{"role": "user", "content": "hi " * 300}]}), 400,
                                "messages"),
    "n over the batch limit": (_messages(n=33), 400, "n"),
    "unsupported field": (_messages(logit_bias={"1": 2}), 400, "logit_bias"),
    "unsupported nested field": ('{"messages": [{"role": "user", "content": "x", "name": "bob"}]}', 400,
                                 "messages.0.name"),
    "structured output": (_messages(response_format={"type": "json_object"}), 400, "response_format"),
    "top_logprobs without logprobs": (_messages(top_logprobs=2), 400, "top_logprobs"),
    "penalty out of range": (_messages(presence_penalty=2.5), 400, "presence_penalty"),
}


@pytest.mark.parametrize("body,status,param", BAD.values(), ids=BAD.keys())
def test_bad_input_gets_4xx_with_openai_error(http, body, status, param):
    r = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["param"] == param


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TOOL_TURNS = [{"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": None, "tool_calls": [
                  {"id": "call_1", "type": "function",
                   "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
              {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temperature": 18})}]


def test_tools_need_a_template_with_a_tool_format(http):
    r = http.post("/v1/chat/completions", json={"messages": HELLO, "tools": [WEATHER]})  # `qwen` = qwen1.5: none
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


def test_tools_are_rendered_and_calls_parsed_with_qwen25(loaded):
    from fastapi.testclient import TestClient

    from qwen_sft.generation import Finished
    from qwen_sft.server.app import _message
    from qwen_sft.server.output import Answer

    model, tokenizer = loaded
    app = make_app(loaded, template="qwen2.5")
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"messages": TOOL_TURNS, "tools": [WEATHER], "max_tokens": 2})
        assert r.status_code == 200, r.text
        streamed = client.post("/v1/chat/completions", json={"messages": TOOL_TURNS, "tools": [WEATHER],
                                                              "stream": True})
        assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
    normalized = [TOOL_TURNS[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL_TURNS[2]["content"]}]
    expected = encode_prompt(normalized, tokenizer, get_template("qwen2.5"), [WEATHER])
    assert r.json()["usage"]["prompt_tokens"] == len(expected)
    answer = Answer(done=Finished("stop", 1, 1))
    text = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    message, reason = _message(text, answer, [WEATHER])
    assert reason == "tool_calls" and message.content == "Let me look."
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Rome"}
    assert _message(text, answer, None) == (type(message)(content=text), "stop")  # no tools offered: plain text


def test_n_logprobs_and_penalties(http, loaded):
    _, tokenizer = loaded
    done = chat(http, n=2, temperature=1.0, seed=5, max_tokens=4, logprobs=True, top_logprobs=2,
                presence_penalty=0.5, frequency_penalty=0.5, repetition_penalty=1.2, top_k=20, min_p=0.01)
    assert [c["index"] for c in done["choices"]] == [0, 1]
    assert done["choices"][0]["message"]["content"] != done["choices"][1]["message"]["content"]
    assert done["usage"]["completion_tokens"] == sum(len(c["logprobs"]["content"]) for c in done["choices"])
    for choice in done["choices"]:
        entries = choice["logprobs"]["content"]
        assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 2 for e in entries)
        assert bytes(b for e in entries for b in e["bytes"]).decode("utf-8", "replace") == \
            choice["message"]["content"] or choice["finish_reason"] == "stop"
    with http.stream("POST", "/v1/chat/completions", json={"messages": HELLO, "max_tokens": 3, "temperature": 0,
                                                         "logprobs": True, "n": 2, "stream": True}) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    lps = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert len(lps) == 6 and {c["choices"][0]["index"] for c in chunks} == {0, 1}


def test_checkpoint_generation_config_gives_the_defaults(loaded):
    from fastapi.testclient import TestClient

    model, _ = loaded
    saved = model.generation_config
    model.generation_config = GenerationConfig(top_k=1, max_new_tokens=5)  # top_k 1: sampling can only pick the best
    try:
        app, plain = make_app(loaded), make_app(loaded, generation_config="none")
    finally:
        model.generation_config = saved
    assert (app.state.defaults.top_k, app.state.defaults.temperature, plain.state.defaults.top_k) == (1, 1.0, 0)
    with TestClient(app) as client:
        unset = client.post("/v1/chat/completions", json={"messages": HELLO}).json()  # temperature 1, top_k 1
        greedy = client.post("/v1/chat/completions", json={"messages": HELLO, "temperature": 0}).json()
    assert unset["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
    assert unset["usage"]["completion_tokens"] <= 5  # the checkpoint's max_new_tokens


def test_a_client_that_leaves_a_non_streaming_request_frees_its_row(loaded):
    app = make_app(loaded, max_tokens_limit=4000, max_model_len=8192)
    engine = app.state.engine
    with running(app) as url:
        host, port = url[len("http://"):].split(":")
        body = json.dumps({"messages": HELLO, "max_tokens": 4000, "temperature": 0}).encode()
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 30
        while engine.live_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.live_rows == 1
        sock.close()  # the client goes away without reading the answer
        while engine.live_rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.live_rows == 0 and engine.steps < 3000, engine.steps
    engine.stop()


def test_limits_are_named_in_the_message(http):
    over = http.post("/v1/chat/completions", content=_messages(max_tokens=LIMIT + 1))
    assert str(LIMIT) in over.json()["error"]["message"]
    long = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi " * 300}]})
    assert str(CONTEXT) in long.json()["error"]["message"]
    spec = http.post("/nlg/text_generate", json={"instruction": "x", "max_new_tokens": LIMIT + 1})
    assert spec.status_code == 400 and str(LIMIT) in spec.json()["error"]["message"]


def test_oversized_bodies_get_413(url, http):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * BODY_LIMIT}]})
    declared = http.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and str(BODY_LIMIT) in declared.json()["error"]["message"]

    def chunks():  # no Content-Length: chunked transfer, so only counting the bytes received catches it
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096].encode()

    streamed = http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "content-length" not in streamed.request.headers
    assert http.get("/health").status_code == 200


def test_unknown_route_and_method_are_json_errors(http):
    assert http.get("/v1/nope").json()["error"]["code"] == "http_404"
    assert http.get("/v1/chat/completions").status_code == 405
    assert http.get("/../../etc/passwd").status_code == 404


def test_app_serves_again_after_a_shutdown(loaded):
    from fastapi.testclient import TestClient

    app = make_app(loaded)
    for _ in range(2):  # each `with` runs the lifespan: startup, then shutdown (which stops the engine)
        with TestClient(app) as client:
            assert client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}).status_code == 200
    assert not app.state.engine.running


# ---- auth ----
def test_api_key(loaded, caplog):
    import openai

    caplog.set_level(logging.DEBUG)  # every record, uvicorn's access log included
    app = make_app(loaded, api_key=KEY)
    with running(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/health").status_code == 200  # no key needed
        wrong = ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"})
        for headers in wrong:
            r = http.post("/v1/chat/completions", json={"messages": HELLO}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert http.post("/v1/chat/completions", content="{bad", headers={}).status_code == 401  # auth comes first
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).choices[0].message
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    app.state.engine.stop()
    assert KEY not in caplog.text


# ---- batching ----
@pytest.mark.slow
def test_load_32_concurrent_clients(url, app):
    """32 clients at once, half streaming: every answer complete and well-formed, and decoded together."""
    steps_before = app.state.engine.steps

    async def client(i: int, http: httpx.AsyncClient):
        body = {"messages": [{"role": "user", "content": f"question {i}: " + "why " * (i % 7)}],
                "max_tokens": 4 + i % 5, "temperature": 0 if i % 3 else 0.8}
        if i % 2:
            async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                lines = [line async for line in r.aiter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(line[6:]) for line in lines[:-1]]
            assert all(c["object"] == "chat.completion.chunk" for c in chunks)
            assert [c["choices"][0]["finish_reason"] for c in chunks][-2:] in ([None, "stop"], [None, "length"])
            return True
        r = await http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["choices"][0]["finish_reason"] in ("stop", "length")
        assert done["usage"]["completion_tokens"] <= body["max_tokens"]
        return True

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            return await asyncio.gather(*(client(i, http) for i in range(32)))

    assert all(asyncio.run(main()))
    # 32 requests of 4..8 tokens decoded one after another would take >= 150 steps
    assert app.state.engine.steps - steps_before < 40


@pytest.mark.slow
def test_greedy_output_is_the_same_alone_or_batched(url):
    prompts = [[{"role": "user", "content": text}] for text in ("Hi", "Tell me a long story about a dragon " * 3,
                                                                 "1+1=", "类型#裙*版型#宽松*颜色#黑色")]

    async def ask(http, messages, max_tokens):
        r = await http.post("/v1/chat/completions",
                            json={"messages": messages, "temperature": 0, "max_tokens": max_tokens})
        return r.json()["choices"][0]["message"]["content"]

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            alone = [await ask(http, p, 12) for p in prompts]
            others = [[{"role": "user", "content": "filler " * n}] for n in range(1, 9)]
            together = await asyncio.gather(*(ask(http, p, 12) for p in prompts),
                                            *(ask(http, p, 3 + n) for n, p in enumerate(others)))
            return alone, together[: len(prompts)]

    alone, together = asyncio.run(main())
    assert together == alone


# ---- the command ----
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_busy_port_is_a_one_line_user_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "qwen_sft", "serve", "--port", str(port)],
                             capture_output=True, text=True, timeout=120)
    last_line = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and last_line.startswith("qwen-sft serve: error: cannot listen"), run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig,exit_codes", [(signal.SIGTERM, (0, -signal.SIGTERM)), (signal.SIGINT, (0,))],
                         ids=["SIGTERM", "SIGINT"])
def test_cli_serves_and_shuts_down_cleanly_on_signal(sig, exit_codes):
    port = _free_port()
    cmd = [sys.executable, "-m", "qwen_sft", "serve", "--model", "tiny", "--port", str(port), "--dtype", "fp32",
           "--max-tokens-limit", "4", "--api-key", KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and proc.poll() is None, "the server never answered /health"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.post(f"{url}/v1/chat/completions", json={"messages": HELLO}, headers=auth, timeout=60).json()[
            "usage"]["completion_tokens"] <= 4
        assert httpx.get(f"{url}/v1/models").status_code == 401
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode in exit_codes, output
    assert "Application shutdown complete" in output and "Traceback" not in output and KEY not in output

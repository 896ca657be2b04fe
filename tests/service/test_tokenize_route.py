"""vLLM's ``/tokenize``, ``/detokenize`` and ``/version`` (`lapo.service.tokenize_route`)
through the HTTP app, the model a scripted fake engine with the tiny tokenizer (no vLLM engine
runs)."""

from __future__ import annotations

import json

import pytest
from fake_engine import MESSAGES, FakeEngine, tiny_tokenizer
from fastapi.testclient import TestClient

from lapo.service.app import create_app
from lapo.service.settings import Settings
from lapo.service.state import service_state

TOK = tiny_tokenizer()
KEY = {"Authorization": "Bearer k1"}


@pytest.fixture
def app(tmp_path):
    settings = Settings(model=tmp_path, served_model_name="tiny", api_keys="k1",
                        max_model_len=1024)
    return create_app(settings, start_engine=False)


@pytest.fixture
def client(app):
    fake = FakeEngine({"main": " First 3+4=7.</think>7"})
    with TestClient(app, headers=KEY) as c:
        service_state(app).registry.install(fake.handle())
        yield c


def test_tokenize_prompt(client) -> None:
    text = "What is 3+4?"
    r = client.post("/tokenize", json={"model": "tiny", "prompt": text,
                                       "add_special_tokens": False})
    assert r.status_code == 200
    ids = TOK.encode(text, add_special_tokens=False)
    assert r.json() == {"count": len(ids), "max_model_len": 1024, "tokens": ids,
                        "token_strs": None}
    r = client.post("/tokenize", json={"prompt": text, "return_token_strs": True})
    assert r.json()["tokens"] == TOK.encode(text)  # add_special_tokens defaults to true
    assert r.json()["token_strs"] == TOK.convert_ids_to_tokens(TOK.encode(text))


def test_tokenize_messages_counts_the_chat_prompt(client) -> None:
    """``count`` is what a chat completion reports as ``usage.prompt_tokens``."""
    r = client.post("/tokenize", json={"model": "tiny", "messages": MESSAGES})
    chat = client.post("/v1/chat/completions",
                       json={"model": "tiny", "messages": MESSAGES, "max_tokens": 16})
    assert r.status_code == chat.status_code == 200
    body = r.json()
    assert body["count"] == len(body["tokens"]) == chat.json()["usage"]["prompt_tokens"]
    assert TOK.decode(body["tokens"]).endswith("<|im_start|>assistant\n<think>")
    closed = client.post("/tokenize", json={"messages": MESSAGES,
                                            "add_generation_prompt": False}).json()
    assert TOK.decode(closed["tokens"]).endswith("What is 3+4?<|im_end|>\n")


def test_detokenize_round_trip(client) -> None:
    ids = TOK.encode("<|im_start|>user\nhi<think>", add_special_tokens=False)
    r = client.post("/detokenize", json={"model": "tiny", "tokens": ids})
    assert r.status_code == 200
    assert r.json() == {"prompt": "<|im_start|>user\nhi<think>"}  # special tokens kept


def test_version(client) -> None:
    from vllm import __version__

    assert client.get("/version").json() == {"version": __version__, "lapo_version": "0.1.0"}


SIZE = len(TOK)


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), [
    ("/tokenize", {"prompt": "x", "messages": MESSAGES}, 400, "body", ["exactly one"]),
    ("/tokenize", {"model": "tiny"}, 400, "body", ["exactly one"]),
    ("/tokenize", {"prompt": "x", "add_generation_prompt": True}, 400, "body",
     ["'add_generation_prompt' applies to 'messages' only"]),
    ("/tokenize", {"prompt": "x", "model": "other"}, 404, "model", ["'other'", "'tiny'"]),
    ("/tokenize", {"messages": MESSAGES, "continue_final_message": True}, 400,
     "continue_final_message", ["Unsupported parameter"]),
    ("/tokenize", {"messages": MESSAGES, "chat_template_kwargs": {"enable_thinking": True}},
     400, "chat_template_kwargs.enable_thinking", ["does not read"]),
    ("/tokenize", {"messages": [{"role": "user", "content": "x" * 32_001}]}, 400,
     "messages.0.content", ["32000", "32001"]),
    ("/detokenize", {"tokens": [1, SIZE]}, 400, "tokens.1", [f"[0, {SIZE})", f"got {SIZE}"]),
    ("/detokenize", {"tokens": [-1]}, 400, "tokens.0", [f"[0, {SIZE})", "got -1"]),
    ("/detokenize", {"tokens": [2**70]}, 400, "tokens.0", ["got"]),
    ("/detokenize", {"tokens": "12"}, 400, "tokens", ["list"]),
    ("/detokenize", {"tokens": [1], "model": "other"}, 404, "model", ["'other'"]),
    # JSON can escape a lone surrogate, which no tokenizer can encode
    ("/tokenize", {"prompt": "a\ud800b"}, 400, "body", ["'prompt'", "not valid Unicode"]),
    ("/tokenize", {"messages": [{"role": "user", "content": "\udc00"}]}, 400, "body",
     ["'messages.0.content'", "not valid Unicode"]),
])
def test_errors_name_the_field(client, path, body, status, param, words) -> None:
    # json.dumps escapes what httpx's json= cannot encode (lone surrogates)
    r = client.post(path, content=json.dumps(body),
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param
    for word in words:
        assert word in error["message"], (word, error["message"])


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/tokenize", {"prompt": "x"}), ("post", "/detokenize", {"tokens": [1]}),
    ("get", "/version", None)])
def test_same_key_as_the_chat_route(app, method, path, body) -> None:
    with TestClient(app) as c:
        kw = {"json": body} if body is not None else {}
        r = getattr(c, method)(path, headers={"Authorization": "Bearer nope"}, **kw)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = getattr(c, method)(path, headers=KEY, **kw)
        # no model yet: the tokenizer routes are 503 as the chat route; /version answers
        if path == "/version":
            assert r.status_code == 200
        else:
            assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
            assert r.headers["retry-after"]


def test_openapi_lists_the_routes(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/tokenize", "/detokenize", "/version"} <= set(paths)
    assert "422" not in paths["/tokenize"]["post"]["responses"]

"""``POST /v1/completions`` on the scripted fake engine: prompts of every shape become engine
requests with the request's sampling (`SamplingParams`), n x prompts choices in OpenAI's order,
echo, legacy logprobs, streaming, usage, and 400s naming the field. No vLLM engine runs."""

from __future__ import annotations

import json

import pytest
from fake_engine import FakeEngine, served_client, token_counter

TOK = token_counter()
TEXT = " 3+4=7."


@pytest.fixture
def served(tmp_path):
    fake = FakeEngine(lambda call: TEXT)
    with served_client(tmp_path, fake) as c:
        yield c, fake


def post(client, **fields):
    return client.post("/v1/completions", json={"model": "tiny", **fields})


def test_a_text_prompt_is_completed_raw(served) -> None:
    client, fake = served
    r = post(client, prompt="What is 3+4?", max_tokens=32, temperature=0.5, seed=3,
             top_k=5, stop=["##"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["text"] == TEXT and choice["finish_reason"] == "stop"
    [call] = fake.calls
    params = call.params
    assert (params.max_tokens, params.temperature, params.seed, params.top_k, params.stop) == (
        32, 0.5, 3, 5, ["##"])
    assert params.structured_outputs is None
    # tokenized as vLLM tokenizes a text prompt, no chat template
    assert call.prompt_ids == TOK.tokenizer.encode("What is 3+4?")
    assert body["usage"] == {"prompt_tokens": len(call.prompt_ids),
                             "completion_tokens": len(call.ids),
                             "total_tokens": len(call.prompt_ids) + len(call.ids)}


@pytest.mark.parametrize(("prompt", "n_prompts"), [
    ("a", 1), (["a", "b"], 2), ([5, 6, 7], 1), ([[5, 6], [7]], 2)])
def test_every_prompt_shape_and_n(served, prompt, n_prompts) -> None:
    client, fake = served
    r = post(client, prompt=prompt, n=2, seed=10)
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == list(range(2 * n_prompts))
    assert len(fake.calls) == 2 * n_prompts
    # seeds per choice of a prompt: seed, seed + 1
    assert [c.params.seed for c in fake.calls] == [10, 11] * n_prompts
    if isinstance(prompt, list) and isinstance(prompt[0], list):
        assert [c.prompt_ids for c in fake.calls] == [[5, 6], [5, 6], [7], [7]]


def test_echo_returns_the_prompt_first(served) -> None:
    client, _ = served
    r = post(client, prompt="Q:", echo=True)
    assert r.json()["choices"][0]["text"] == "Q:" + TEXT


def test_legacy_logprobs(served) -> None:
    client, fake = served
    r = post(client, prompt="Q:", logprobs=2)
    lp = r.json()["choices"][0]["logprobs"]
    [call] = fake.calls
    assert call.params.logprobs == 2
    n = len(call.ids)
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n
    assert lp["text_offset"][0] == 0
    assert all(lp["text_offset"][i] <= lp["text_offset"][i + 1] for i in range(n - 1))
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"],
                                   strict=True):
        assert top[token] == logprob and len(top) <= 3


def test_echo_with_logprobs_scores_the_prompt(served) -> None:
    # What lm-eval's loglikelihood requests: the prompt's own logprobs, then the completion's.
    client, fake = served
    r = post(client, prompt="Q: 3+4", echo=True, logprobs=1, max_tokens=1)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    lp = choice["logprobs"]
    [call] = fake.calls
    assert call.params.prompt_logprobs == 1
    n_prompt = len(call.prompt_ids)
    assert len(lp["tokens"]) == n_prompt + len(call.ids)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v <= 0 for v in lp["token_logprobs"][1:])
    assert "".join(lp["tokens"][:n_prompt]) == "Q: 3+4"
    assert lp["text_offset"][n_prompt] == len("Q: 3+4")
    assert choice["text"].startswith("Q: 3+4")


def test_stream_with_usage(served) -> None:
    client, fake = served
    with client.stream("POST", "/v1/completions", json={
            "model": "tiny", "prompt": "Q:", "n": 2, "stream": True, "echo": True,
            "stream_options": {"include_usage": True}}) as s:
        events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts = {0: "", 1: ""}
    finish = {}
    for c in chunks[:-1]:
        [choice] = c["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "Q:" + TEXT, 1: "Q:" + TEXT} and finish == {0: "stop", 1: "stop"}
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == sum(len(c.ids) for c in fake.calls)


def test_structured_outputs_constrain_the_whole_completion(served) -> None:
    client, fake = served
    r = post(client, prompt="Q:", structured_outputs={"choice": ["yes", "no"]})
    assert r.status_code == 200, r.text
    [call] = fake.calls
    assert call.params.structured_outputs.choice == ["yes", "no"]


@pytest.mark.parametrize(("fields", "param"), [
    ({"prompt": []}, "prompt"),
    ({"prompt": [[]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": [10**9]}, "prompt"),
    ({"prompt": "a", "n": 9}, "n"),
    ({"prompt": ["a"] * 5, "n": 2}, "prompt"),
    ({"prompt": "a", "max_tokens": 10**7}, "max_tokens"),
    ({"prompt": "a", "logprobs": 21}, "logprobs"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "a", "structured_outputs": {"regex": "a"}, "stop": ["x"]}, "stop"),
    ({"prompt": "a", "structured_outputs": {"regex": "a"}, "ignore_eos": True}, "ignore_eos"),
    ({"prompt": "a", "suffix": "b"}, "suffix"),
    ({"prompt": "a", "best_of": 2}, "best_of"),
    ({"prompt": "a", "structured_outputs": {"regex": "[a-"}}, "structured_outputs"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, "body"),
])
def test_invalid_requests_are_400s_naming_the_field(served, fields, param) -> None:
    client, fake = served
    r = post(client, **fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()
    assert not fake.calls


def test_unknown_model_is_404(served) -> None:
    client, _ = served
    r = client.post("/v1/completions", json={"model": "nope", "prompt": "a"})
    assert r.status_code == 404


def test_auth_is_required(served) -> None:
    client, _ = served
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "a"},
                    headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401

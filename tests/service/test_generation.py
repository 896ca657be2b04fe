"""Exact tests of one choice's generation (`lapo.service.generation`) and of `ChatService` on the
scripted fake engine (`tests/service/fake_engine.py`): budget phases, hard cap, think split,
token counts, stop strings, aborts, n > 1 merging. No vLLM engine runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_engine import (
    HANG,
    MESSAGES,
    FakeEngine,
    chat_prompt,
    token_counter,
)

from lapo import protocol as p
from lapo.service.budget import BudgetLimits, BudgetPlan, hard_cap, scale
from lapo.service.chat import ChatService, lapo_info
from lapo.service.generation import (
    ChoiceJob,
    ChoiceResult,
    Delta,
    EngineDead,
    SamplingSpec,
    _params,
    generate_choice,
    run_choice,
)
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings

TOK = token_counter()
PROMPT = chat_prompt()
LIMITS = BudgetLimits()
STMT = p.budget_statement
# 400 tokens of reasoning (" " and a digit each), far past any cap below.
LONG = "".join(f" {i % 10}" for i in range(200))
ANSWER = "The answer is 7."


def enc(text: str) -> list[int]:
    return TOK.encode(text)


def job(plan: BudgetPlan = BudgetPlan("auto"), max_tokens: int = 512,
        stop: list[str] | None = None, seed: int | None = 0,
        limits: BudgetLimits = LIMITS) -> ChoiceJob:
    return ChoiceJob(PROMPT, SamplingSpec(0.6, 0.95, max_tokens, seed, stop), plan, limits)


async def run(fake: FakeEngine, job: ChoiceJob, model=None
              ) -> tuple[list[Delta], ChoiceResult]:
    items = [item async for item in run_choice(model or fake.handle(), job)]
    *deltas, result = items
    assert isinstance(result, ChoiceResult)
    for d in deltas:
        assert isinstance(d, Delta) and bool(d.reasoning) != bool(d.answer)
    return deltas, result


def joined(deltas: list[Delta]) -> tuple[str, str]:
    return "".join(d.reasoning for d in deltas), "".join(d.answer for d in deltas)


def prompt_input(ids: list[int]) -> dict:
    return {"prompt_token_ids": ids}


def test_statement_tokenization_is_aligned() -> None:
    """The expectations below count a statement's tokens as ``len(enc(statement))``: true
    when the text after it starts a new pre-token, as in every script here."""
    for rest in (" First 3+4=7.", LONG, " 7."):
        assert enc(STMT(12) + rest) == enc(STMT(12)) + enc(rest)
    assert enc(f"a{p.THINK_CLOSE}b") == enc("a") + [TOK.close_id] + enc("b")


# --------------------------------------------------------------------------- auto mode

AUTO_CASES = [
    # (reasoning, answer, declared, statement tokens)
    pytest.param(STMT(12) + " First 3+4=7.", ANSWER, 12, len(enc(STMT(12))), id="statement"),
    pytest.param(" First 3+4=7.", "7", None, 0, id="no-statement"),
    # parse_budget only takes a statement near the start of the reasoning
    pytest.param(" " + "x" * 70 + STMT(12), "7", None, 0, id="statement-too-late"),
    pytest.param(STMT(3) + " 7.", "", 3, len(enc(STMT(3))), id="empty-answer"),
]


@pytest.mark.parametrize(("reasoning", "answer", "declared", "stmt_len"), AUTO_CASES)
async def test_auto_mode_self_declared(reasoning, answer, declared, stmt_len) -> None:
    fake = FakeEngine({"main": reasoning + p.THINK_CLOSE + answer})
    deltas, r = await run(fake, job())

    [call] = fake.calls
    assert call.kind == "main" and call.prompt == prompt_input(PROMPT.ids)
    fake.engine.abort.assert_not_awaited()
    assert (r.reasoning, r.answer, r.finish_reason) == (reasoning, answer, "stop")
    assert joined(deltas) == (reasoning, answer)
    n_reasoning = len(enc(reasoning))
    assert r.counts == p.TokenCounts(
        completion_tokens=n_reasoning + 1 + len(enc(answer)) + 1,  # </think>, EOS
        reasoning_tokens=n_reasoning, budgeted_tokens=n_reasoning - stmt_len,
        answer_tokens=len(enc(answer)), declared=declared, closed=True)
    assert r.counts.completion_tokens == len(call.ids)
    assert r.source == ("model" if declared is not None else "none")
    assert r.declared == declared
    assert (r.enforced, r.statement_overhead_tokens) == (False, 0)
    expected_error = (None if declared is None
                      else round((n_reasoning - stmt_len - declared) / declared, 4))
    assert r.budget_error == expected_error


async def test_sampling_params_and_lora_reach_the_engine() -> None:
    from vllm.sampling_params import RequestOutputKind

    lora = object()
    fake = FakeEngine({"main": " First 3+4=7.</think>7"})
    j = ChoiceJob(PROMPT, SamplingSpec(0.3, 0.9, 77, 5, ["##"]))
    await run(fake, j, fake.handle(lora_request=lora))
    [call] = fake.calls
    sp = call.params
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.seed) == (1, 0.3, 0.9, 77, 5)
    assert (sp.stop, sp.include_stop_str_in_output) == (["##"], False)
    assert sp.skip_special_tokens is True and sp.output_kind == RequestOutputKind.DELTA
    assert call.lora_request is lora
    assert call.request_id.startswith("lapo-")


# --------------------------------------------------------------------------- request mode

@pytest.mark.parametrize(
    ("budget", "reasoning"),
    [(1, " First 3+4=7."), (20, " First 3+4=7."), (4096, " First 3+4=7."),
     # a statement the model writes anyway does not replace the injected one
     (20, STMT(99) + " First 3+4=7.")])
async def test_request_budget_is_injected(budget, reasoning) -> None:
    fake = FakeEngine({"main": reasoning + "</think>7"})
    deltas, r = await run(fake, job(BudgetPlan("request", injected=budget)))

    [call] = fake.calls
    assert call.prompt == prompt_input(PROMPT.ids + enc(STMT(budget)))
    assert call.prompt_text == PROMPT.text + STMT(budget)
    assert call.prompt_text.endswith(f"<think> I will answer the question with {budget} tokens.")
    n = len(enc(reasoning))
    assert (r.source, r.declared, r.enforced) == ("request", budget, False)
    assert (r.reasoning, r.answer, r.finish_reason) == (reasoning, "7", "stop")
    assert joined(deltas) == (reasoning, "7")
    # the statement sits in the prompt: every reasoning token is budgeted
    assert r.counts == p.TokenCounts(n + 3, n, n, 1, budget, True)
    assert r.budget_error == round((n - budget) / budget, 4)


# --------------------------------------------------------------------------- hard cap

def _hard_setup(mode: str):
    """(plan, script, declared, statement tokens in the completion) for ``mode``."""
    if mode == "request":
        return (BudgetPlan("request", injected=4, hard=True),
                {"main": LONG + "</think>never", "continue": ANSWER}, 4, 0)
    if mode == "auto":
        return (BudgetPlan("auto", hard=True),
                {"main": STMT(4) + LONG + "</think>never", "continue": ANSWER}, 4,
                len(enc(STMT(4))))
    return (BudgetPlan("effort", effort_factor=0.5, hard=True),
            {"statement": STMT(10) + " more", "main": LONG + "</think>never",
             "continue": ANSWER}, scale(10, 0.5), 0)


@pytest.mark.parametrize("mode", ["request", "auto", "effort"])
async def test_hard_cap_aborts_and_continues_after_think_close(mode) -> None:
    plan, script, declared, stmt_len = _hard_setup(mode)
    max_tokens = 300
    fake = FakeEngine(script)
    deltas, r = await run(fake, job(plan, max_tokens=max_tokens, seed=3))

    main = [c for c in fake.calls if c.kind == "main"]
    cont = [c for c in fake.calls if c.kind == "continue"]
    assert len(main) == len(cont) == 1 and len(fake.calls) == (3 if mode == "effort" else 2)
    main, cont = main[0], cont[0]
    # the capped request was cut (never finished) and aborted; the continuation finished
    assert main.finish_reason is None and cont.finish_reason == "stop"
    assert fake.aborted == [main.request_id]
    cap = hard_cap(declared, LIMITS.hard_slack_ratio, LIMITS.hard_slack_tokens)
    assert len(main.ids) - stmt_len == cap  # cut at exactly the cap ...
    assert len(main.ids) < len(main.script_ids) / 2  # ... and was cut long before its end
    # the continuation: exactly the prompt, the generated ids and the forced </think>
    assert cont.prompt == prompt_input(main.prompt_ids + main.ids + [TOK.close_id])
    assert cont.prompt_text == main.prompt_text + main.text + p.THINK_CLOSE
    assert cont.params.max_tokens == max_tokens - len(main.ids) - 1
    assert (cont.params.seed, cont.params.stop) == (3, [])
    assert cont.params.include_stop_str_in_output is False

    assert r.enforced is True
    assert (r.reasoning, r.answer, r.finish_reason) == (main.text, ANSWER, "stop")
    assert TOK.decode(main.ids) == main.text
    assert joined(deltas) == (r.reasoning, ANSWER)
    assert r.counts == p.TokenCounts(
        completion_tokens=len(main.ids) + 1 + len(cont.ids),
        reasoning_tokens=len(main.ids), budgeted_tokens=len(main.ids) - stmt_len,
        answer_tokens=len(enc(ANSWER)), declared=declared, closed=True)
    assert (r.declared, r.source) == (declared, {"request": "request", "auto": "model",
                                                 "effort": "effort"}[mode])


@pytest.mark.parametrize("mode", ["request", "auto", "effort"])
async def test_hard_cap_reasoning_is_exactly_the_cap(mode) -> None:
    plan, script, declared, stmt_len = _hard_setup(mode)
    fake = FakeEngine(script)
    _, r = await run(fake, job(plan, max_tokens=300))
    cap = hard_cap(declared, LIMITS.hard_slack_ratio, LIMITS.hard_slack_tokens)
    assert r.enforced is True
    assert r.counts.budgeted_tokens == cap
    assert r.counts.reasoning_tokens == stmt_len + cap


@pytest.mark.parametrize("stop", [["##"], ["\n\n\n\n"]])
async def test_hard_cap_reasoning_text_is_all_generated_text(stop) -> None:
    fake = FakeEngine({"main": LONG, "continue": ANSWER})
    deltas, r = await run(fake, job(BudgetPlan("request", injected=4, hard=True), stop=stop))
    main, cont = fake.calls
    assert r.enforced is True and cont.prompt == prompt_input(
        main.prompt_ids + main.ids + [TOK.close_id])
    assert r.reasoning == joined(deltas)[0] == TOK.decode(main.ids)
    assert cont.prompt_text == main.prompt_text + TOK.decode(main.ids) + p.THINK_CLOSE


async def test_hard_cap_continuation_runs_out_of_tokens() -> None:
    """The total max_tokens still holds: the continuation gets what is left of it."""
    max_tokens = 40
    fake = FakeEngine({"main": LONG, "continue": " word" * 100})
    deltas, r = await run(fake, job(BudgetPlan("request", injected=4, hard=True),
                                    max_tokens=max_tokens, stop=["##"]))
    main, cont = fake.calls
    assert fake.aborted == [main.request_id]
    assert cont.params.max_tokens == max_tokens - len(main.ids) - 1 > 0
    assert (cont.params.stop, cont.params.include_stop_str_in_output) == (["##"], False)
    assert cont.finish_reason == "length" and r.finish_reason == "length"
    assert r.counts.completion_tokens == max_tokens
    assert r.answer == cont.text == TOK.decode(cont.ids)
    assert r.enforced is True and joined(deltas) == (r.reasoning, r.answer)


@pytest.mark.parametrize(
    ("plan", "script", "max_tokens", "finish"),
    [
        # the reasoning closes well before the cap (58 for a budget of 40)
        (BudgetPlan("request", injected=40, hard=True), " First 3+4=7.</think>7", 512,
         "stop"),
        (BudgetPlan("auto", hard=True), STMT(40) + " First 3+4=7.</think>7", 512, "stop"),
        # max_tokens ends the reasoning before the cap: the engine finished, nothing forced
        (BudgetPlan("request", injected=40, hard=True), LONG, 10, "length"),
    ])
async def test_hard_cap_not_triggered(plan, script, max_tokens, finish) -> None:
    fake = FakeEngine({"main": script})
    _, r = await run(fake, job(plan, max_tokens=max_tokens))
    [call] = fake.calls
    fake.engine.abort.assert_not_awaited()
    assert (r.enforced, r.finish_reason) == (False, finish)
    assert r.counts.completion_tokens == len(call.ids)


# --------------------------------------------------------------------------- effort mode

@pytest.mark.parametrize(("factor", "own", "scaled"),
                         [(0.5, 40, 20), (1.0, 40, 40), (1.5, 40, 60), (0.5, 1, 1)])
async def test_effort_scales_the_models_statement(factor, own, scaled) -> None:
    assert scale(own, factor) == scaled
    main_text = " First 3+4=7.</think>7"
    fake = FakeEngine({"statement": STMT(own) + " Then more words.", "main": main_text})
    deltas, r = await run(fake, job(BudgetPlan("effort", effort_factor=factor), seed=9))

    first, main = fake.calls
    assert (first.kind, main.kind) == ("statement", "main")
    assert first.prompt == prompt_input(PROMPT.ids)
    assert first.params.stop == ["tokens."] and first.params.include_stop_str_in_output
    assert first.params.max_tokens == LIMITS.statement_max_tokens
    assert first.params.seed == main.params.seed == 9
    assert (first.text, first.finish_reason, first.stop_reason) == (STMT(own), "stop", "tokens.")
    assert first.ids == enc(STMT(own))
    fake.engine.abort.assert_not_awaited()  # the first phase finished on its own

    assert main.prompt == prompt_input(PROMPT.ids + enc(STMT(scaled)))
    assert main.prompt_text == PROMPT.text + STMT(scaled)
    assert (r.source, r.declared, r.enforced) == ("effort", scaled, False)
    assert r.statement_overhead_tokens == len(first.ids)
    n = len(enc(" First 3+4=7."))
    # the first phase's tokens are not part of the completion
    assert r.counts == p.TokenCounts(n + 3, n, n, 1, scaled, True)
    assert (r.reasoning, r.answer) == joined(deltas) == (" First 3+4=7.", "7")


async def test_effort_without_a_statement() -> None:
    text = " First 3+4=7.</think>7"
    fake = FakeEngine({"statement": text, "main": text})
    _, r = await run(fake, job(BudgetPlan("effort", effort_factor=0.5)))
    first, main = fake.calls
    assert first.finish_reason == "stop" and first.ids == enc(text) + [TOK.tokenizer.eos_token_id]
    assert main.prompt == prompt_input(PROMPT.ids)  # nothing injected
    assert (r.source, r.declared) == ("none", None)
    assert r.statement_overhead_tokens == len(first.ids)
    assert r.counts.budgeted_tokens == r.counts.reasoning_tokens == len(enc(" First 3+4=7."))


async def test_effort_without_a_first_phase_statement_reports_the_models_own() -> None:
    """No statement to scale in the first phase (cut by statement_max_tokens): the main
    phase runs on the plain prompt, and the statement the model writes there is its own."""
    fake = FakeEngine({"statement": STMT(12) + " x", "main": STMT(12) + " First 3+4=7.</think>7"})
    _, r = await run(fake, job(BudgetPlan("effort", effort_factor=0.5),
                               limits=BudgetLimits(statement_max_tokens=5)))
    first, _ = fake.calls
    assert first.finish_reason == "length" and len(first.ids) == 5
    assert (r.source, r.declared) == ("model", 12)


# --------------------------------------------------------------------------- stop, length

@pytest.mark.parametrize(
    ("text", "stop", "reasoning", "answer", "stop_reason"),
    [
        (" First 3+4=7.</think>7\n\nDone.", ["\n\n"], " First 3+4=7.", "7", "\n\n"),
        (" First 3+4=7.</think>7\n\nDone.", ["Done", "\n\n"], " First 3+4=7.", "7", "\n\n"),
        (" First 3+4=7.</think>7 Done.", ["Done", "\n\n"], " First 3+4=7.", "7 ", "Done"),
        # stop applies to the reasoning too (as in vLLM)
        (" First 3+4=7.</think>7", ["=7"], " First 3+4", "", "=7"),
        (" First 3+4=7.</think>7", ["never"], " First 3+4=7.", "7", None),
    ])
async def test_stop_strings(text, stop, reasoning, answer, stop_reason) -> None:
    fake = FakeEngine({"main": text})
    deltas, r = await run(fake, job(stop=stop))
    [call] = fake.calls
    assert (call.finish_reason, call.stop_reason) == ("stop", stop_reason)
    assert (r.reasoning, r.answer, r.finish_reason) == (reasoning, answer, "stop")
    assert joined(deltas) == (reasoning, answer)
    closed = p.THINK_CLOSE in text[: text.find(stop_reason)] if stop_reason else True
    assert r.counts.closed is closed
    assert r.counts.completion_tokens == len(call.ids)
    if stop_reason is not None:  # generation ended on the token completing the stop string
        assert call.ids == enc(text)[: len(call.ids)]
        assert stop_reason in TOK.decode(call.ids)
        assert stop_reason not in TOK.decode(call.ids[:-1])
    fake.engine.abort.assert_not_awaited()


R12 = STMT(12) + " First 3+4=7."


@pytest.mark.parametrize(
    ("plan", "max_tokens", "closed", "source", "declared", "budgeted"),
    [
        (BudgetPlan("auto"), 5, False, "none", None, 5),  # inside the statement
        (BudgetPlan("auto"), 13, False, "model", 12, 2),  # statement + 2 tokens
        (BudgetPlan("request", injected=8), 5, False, "request", 8, 5),
        # the last token allowed is </think>: reasoning complete, no answer
        (BudgetPlan("auto"), len(enc(R12)) + 1, True, "model", 12, len(enc(" First 3+4=7."))),
    ])
async def test_max_tokens_inside_reasoning(plan, max_tokens, closed, source, declared,
                                           budgeted) -> None:
    fake = FakeEngine({"main": R12 + "</think>" + ANSWER})
    deltas, r = await run(fake, job(plan, max_tokens=max_tokens))
    [call] = fake.calls
    assert call.finish_reason == "length" and len(call.ids) == max_tokens
    assert (r.finish_reason, r.answer, r.enforced) == ("length", "", False)
    assert r.reasoning == TOK.decode(call.ids[:max_tokens - closed])
    assert joined(deltas) == (r.reasoning, "")
    assert r.counts == p.TokenCounts(max_tokens, max_tokens - closed, budgeted, 0, declared,
                                     closed)
    assert (r.source, r.declared) == (source, declared)
    fake.engine.abort.assert_not_awaited()


# --------------------------------------------------------------------------- streaming split

SPLIT_REASONING = STMT(12) + " 3<4, a</b> and </thin k; <"
SPLIT_ANSWER = "So 3<4 is true />"
SPLIT_TEXT = SPLIT_REASONING + p.THINK_CLOSE + SPLIT_ANSWER
N_SPLIT_R = len(enc(SPLIT_REASONING))


def _tag_split(call) -> bool:
    """Some delta ends inside </think> (a proper prefix of 2+ characters)."""
    return any(d.endswith(p.THINK_CLOSE[:k]) for d in call.deltas
               for k in range(2, len(p.THINK_CLOSE)))


def _glued(call) -> bool:
    """Some delta holds </think> with answer text after it."""
    return any(p.THINK_CLOSE in d and not d.endswith(p.THINK_CLOSE) for d in call.deltas)


@pytest.mark.parametrize(
    ("steps", "stop", "check"),
    [
        pytest.param(1, None, None, id="1-token-deltas"),
        pytest.param(2, None, None, id="2-token-deltas"),
        pytest.param(3, None, None, id="3-token-deltas"),
        pytest.param([N_SPLIT_R, 2], None, _glued, id="close-glued-to-answer"),
        pytest.param([N_SPLIT_R - 2, 4], None, _glued, id="reasoning-close-answer"),
        pytest.param(10_000, None, _glued, id="one-delta"),
        # a stop string shifts the streamed text (vLLM holds back len(stop) - 1 chars), so
        # </think> arrives split over two deltas
        pytest.param(1, ["#####"], _tag_split, id="tag-split-4"),
        pytest.param(1, ["@@@"], _tag_split, id="tag-split-2"),
        pytest.param(3, ["@@@@@@@"], _tag_split, id="tag-split-6-3-tokens"),
    ])
async def test_streaming_think_split(steps, stop, check) -> None:
    expected = p.split_think(SPLIT_TEXT)
    fake = FakeEngine({"main": SPLIT_TEXT}, tokens_per_step=steps)
    deltas, r = await run(fake, job(stop=stop))
    [call] = fake.calls
    if check is not None:
        assert check(call), call.deltas  # the case really splits/glues as named
    assert call.text == SPLIT_TEXT
    reasoning, answer = joined(deltas)
    assert (reasoning, answer) == (expected.reasoning, expected.answer)
    assert (r.reasoning, r.answer) == (SPLIT_REASONING, SPLIT_ANSWER)
    for d in deltas:
        for tag in (p.THINK_OPEN, p.THINK_CLOSE):
            assert tag not in d.reasoning and tag not in d.answer
    kinds = ["r" if d.reasoning else "a" for d in deltas]
    assert kinds == sorted(kinds, reverse=True)  # all reasoning first, then the answer
    assert (r.source, r.declared) == ("model", 12)
    assert r.counts.completion_tokens == len(enc(SPLIT_TEXT)) + 1


# --------------------------------------------------------------------------- aborts

async def test_consumer_stop_aborts_the_engine_request() -> None:
    fake = FakeEngine({"main": LONG})
    gen = run_choice(fake.handle(), job())
    assert isinstance(await anext(gen), Delta)
    assert isinstance(await anext(gen), Delta)
    await gen.aclose()
    [call] = fake.calls
    assert call.finish_reason is None
    assert fake.aborted == [call.request_id]


async def test_consumer_stop_during_the_continuation_aborts_it() -> None:
    fake = FakeEngine({"main": LONG, "continue": " word" * 100})
    gen = run_choice(fake.handle(), job(BudgetPlan("request", injected=4, hard=True)))
    async for item in gen:
        if isinstance(item, Delta) and item.answer:
            break
    await gen.aclose()
    main, cont = fake.calls
    assert cont.kind == "continue" and cont.finish_reason is None
    assert fake.aborted == [main.request_id, cont.request_id]


async def test_generate_choice_returns_the_result() -> None:
    fake = FakeEngine({"main": R12 + "</think>7"})
    r = await generate_choice(fake.handle(), job())
    assert (r.reasoning, r.answer, r.source, r.declared) == (R12, "7", "model", 12)
    fake.engine.abort.assert_not_awaited()


async def test_engine_dead_before_first_output() -> None:
    fake = FakeEngine({"main": HANG})
    fake.engine.errored = True
    with pytest.raises(EngineDead):
        await generate_choice(fake.handle(), job())
    [call] = fake.calls
    assert call.closed and fake.aborted == [call.request_id]


# --------------------------------------------------------------------------- ChatService

def _by_seed(call) -> str:
    return STMT(10) + f" Seed {call.params.seed}.</think>{call.params.seed}"


def _service() -> ChatService:
    return ChatService(Settings(model=Path("/fake/tiny"), served_model_name="tiny"))


def _request(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=MESSAGES, **kw)


def _expected_choice(seed: int) -> tuple[str, str, dict]:
    reasoning = STMT(10) + f" Seed {seed}."
    n = len(enc(reasoning))
    stmt = len(enc(STMT(10)))
    info = {"declared_reasoning_tokens": 10, "actual_reasoning_tokens": n - stmt,
            "reasoning_tokens": n, "budget_source": "model",
            "budget_error": round((n - stmt - 10) / 10, 4), "enforced": False,
            "queue_wait_s": None}  # set by the route (the request scope), not here
    return reasoning, str(seed), info


@pytest.mark.parametrize("n", [1, 3])
async def test_chat_complete_n_choices(n) -> None:
    fake = FakeEngine(_by_seed)
    resp, headers, results = await _service().complete(_request(n=n, seed=7, max_tokens=64),
                                                         fake.handle())
    assert sorted(c.params.seed for c in fake.calls) == list(range(7, 7 + n))
    assert all(c.prompt == prompt_input(PROMPT.ids) for c in fake.calls)
    assert all(c.params.max_tokens == 64 for c in fake.calls)
    fake.engine.abort.assert_not_awaited()
    assert [c.index for c in resp.choices] == list(range(n))
    for i, choice in enumerate(resp.choices):
        reasoning, answer, info = _expected_choice(7 + i)
        assert choice.message.content == answer
        assert choice.message.reasoning_content == choice.message.reasoning == reasoning
        assert choice.finish_reason == "stop"
        assert choice.lapo.model_dump() == info
        assert lapo_info(results[i]) == choice.lapo
    completion = sum(len(c.ids) for c in fake.calls)
    assert resp.usage.model_dump() == {
        "prompt_tokens": len(PROMPT.ids), "completion_tokens": completion,
        "total_tokens": len(PROMPT.ids) + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(
            len(enc(_expected_choice(7 + i)[0])) for i in range(n))}}
    assert (resp.model, resp.system_fingerprint) == ("tiny", "lapo-v1")
    if n == 1:
        info = resp.choices[0].lapo
        assert headers == {
            "x-lapo-declared-reasoning-tokens": "10",
            "x-lapo-actual-reasoning-tokens": str(info.actual_reasoning_tokens),
            "x-lapo-budget-source": "model",
            "x-lapo-budget-error": str(info.budget_error), "x-lapo-enforced": "false",
            "x-lapo-queue-wait-s": ""}
    else:
        assert headers == {}


async def test_chat_complete_without_seed_sends_none() -> None:
    fake = FakeEngine(_by_seed)
    await _service().complete(_request(n=2), fake.handle())
    assert [c.params.seed for c in fake.calls] == [None, None]


def _parse_sse(events: list[str]) -> list[dict]:
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in events)
    assert events[-1] == "data: [DONE]\n\n"
    return [json.loads(e[len("data: "):]) for e in events[:-1]]


@pytest.mark.parametrize(("n", "include_usage"), [(1, False), (1, True), (3, False),
                                                  (3, True)])
async def test_chat_stream_n_choices(n, include_usage) -> None:
    fake = FakeEngine(_by_seed, tokens_per_step=2)
    req = _request(n=n, seed=7, max_tokens=64, stream=True,
                   stream_options={"include_usage": include_usage})
    body = await _service().stream(req, fake.handle())
    chunks = _parse_sse([e async for e in body])

    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    for c in chunks:
        assert (c["object"], c["model"], c["system_fingerprint"]) == (
            "chat.completion.chunk", "tiny", "lapo-v1")
        assert ("usage" in c) is include_usage
    for i in range(n):  # role chunks first, in index order
        assert chunks[i]["choices"] == [{"index": i, "delta": {"role": "assistant",
                                                               "content": ""},
                                         "logprobs": None, "finish_reason": None}]
        assert chunks[i].get("usage") is None
    rest = chunks[n:]
    if include_usage:
        *rest, last = rest
        completion = sum(len(c.ids) for c in fake.calls)
        reasoning = sum(len(enc(_expected_choice(7 + i)[0])) for i in range(n))
        assert last["choices"] == []
        assert last["usage"] == {"prompt_tokens": len(PROMPT.ids),
                                 "completion_tokens": completion,
                                 "total_tokens": len(PROMPT.ids) + completion,
                                 "completion_tokens_details": {"reasoning_tokens": reasoning}}
    text = {i: ["", ""] for i in range(n)}
    final = {}
    for c in rest:
        assert c.get("usage") is None
        [choice] = c["choices"]
        i = choice["index"]
        assert i not in final, "a chunk after the choice's final chunk"
        assert choice["logprobs"] is None
        if choice["finish_reason"] is None:
            assert "lapo" not in choice
            delta = choice["delta"]
            if "content" in delta:
                assert set(delta) == {"content"}
                text[i][1] += delta["content"]
            else:
                assert set(delta) == {"reasoning_content", "reasoning"}
                assert delta["reasoning_content"] == delta["reasoning"]
                assert not text[i][1], "reasoning after answer text"
                text[i][0] += delta["reasoning_content"]
        else:
            assert choice["delta"] == {}
            final[i] = choice
    assert sorted(final) == list(range(n))
    for i in range(n):
        reasoning, answer, info = _expected_choice(7 + i)
        assert text[i] == [reasoning, answer]
        assert final[i]["finish_reason"] == "stop"
        assert final[i]["lapo"] == info
    assert sorted(c.params.seed for c in fake.calls) == list(range(7, 7 + n))
    fake.engine.abort.assert_not_awaited()


@pytest.mark.parametrize("n", [1, 2])
async def test_chat_stream_disconnect_aborts_every_choice(n) -> None:
    fake = FakeEngine({"main": LONG})
    body = await _service().stream(_request(n=n, stream=True, max_tokens=512), fake.handle())
    seen: set[int] = set()
    async for event in body:
        choices = json.loads(event[len("data: "):])["choices"]
        if choices and "reasoning" in choices[0]["delta"]:
            seen.add(choices[0]["index"])
            if len(seen) == n:
                break
    await body.aclose()
    assert len(fake.calls) == n
    assert all(c.finish_reason is None for c in fake.calls)
    assert sorted(fake.aborted) == sorted(c.request_id for c in fake.calls)


# --------------------------------------------------------------------------- the fake itself

async def _drive(fake: FakeEngine, params) -> list:
    return [out async for out in fake.engine.generate(
        prompt_input(PROMPT.ids), params, request_id="r1", lora_request=None)]


@pytest.mark.parametrize("steps", [1, 2, 5])
async def test_fake_engine_multibyte_text_and_eos(steps) -> None:
    text = "héllo wörld € 😀 done"
    fake = FakeEngine({"main": text}, tokens_per_step=steps)
    outs = await _drive(fake, _params(SamplingSpec(1.0, 1.0, 100, None, None), 100))
    assert "".join(o.outputs[0].text for o in outs) == text
    assert all("\ufffd" not in o.outputs[0].text for o in outs)
    assert [o.finished for o in outs] == [False] * (len(outs) - 1) + [True]
    ids = [t for o in outs for t in o.outputs[0].token_ids]
    assert ids == enc(text) + [TOK.tokenizer.eos_token_id]
    assert outs[-1].outputs[0].finish_reason == "stop"
    assert all(len(o.outputs[0].token_ids) <= steps for o in outs)


@pytest.mark.parametrize(("include", "expected"), [(False, "ab"), (True, "ab##")])
async def test_fake_engine_stop_string(include, expected) -> None:
    fake = FakeEngine({"main": "ab##cd##"}, tokens_per_step=3)
    spec = SamplingSpec(1.0, 1.0, 100, None, ["##", "cd"], include_stop_str_in_output=include)
    outs = await _drive(fake, _params(spec, 100))
    assert "".join(o.outputs[0].text for o in outs) == expected
    last = outs[-1].outputs[0]
    assert (last.finish_reason, last.stop_reason, outs[-1].finished) == ("stop", "##", True)
    assert fake.calls[0].ids == enc("ab##")[: len(fake.calls[0].ids)]


async def test_fake_engine_max_tokens_and_abort() -> None:
    fake = FakeEngine({"main": LONG})
    outs = await _drive(fake, _params(SamplingSpec(1.0, 1.0, 7, None, None), 7))
    assert len(outs) == 7 and outs[-1].outputs[0].finish_reason == "length"
    await fake.engine.abort("r1")
    assert fake.aborted == ["r1"]

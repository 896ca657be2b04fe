"""Prompt assembly, the one place for serving, evaluation and training: chat template ->
prompt text (-> token ids), and where a budget statement goes.

``chat_text`` is what every consumer sends the model; `Prompt` carries the text with its
token ids so the engine does not tokenize a prompt the caller already tokenized (to count it).
"""

from __future__ import annotations

from dataclasses import dataclass

from lapo import protocol as p
from lapo.think import ThinkProfile, TokenCounter


def chat_text(tokenizer, messages: list[dict], template_kwargs: dict | None = None) -> str:
    """The tokenizer's chat template over ``messages``, opened for the assistant's turn.

    ``template_kwargs``: extra variables the template reads (e.g. Qwen3's
    ``enable_thinking``), as vLLM's ``chat_template_kwargs``.
    """
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **(template_kwargs or {}))


def with_budget(prompt: str, budget: int | None, profile: ThinkProfile) -> str:
    """``prompt`` followed by the budget statement for ``budget`` (none: unchanged).

    The statement is the first thing inside the think span: right after the template's
    ``<think>`` (and whatever the template puts after it), or after a ``<think>`` written
    here for a model that opens the span itself. A model without a think span takes no
    budget (ValueError).
    """
    if budget is None:
        return prompt
    return prompt + profile.budget_prefix() + p.budget_statement(budget)


@dataclass(frozen=True)
class Prompt:
    """A prompt's text and, when known, its token ids: then vLLM gets the ids and does not
    tokenize the prompt a second time (the caller already did, to count it)."""

    text: str
    ids: list[int] | None = None

    @classmethod
    def chat(cls, messages: list[dict], tok: TokenCounter,
             template_kwargs: dict | None = None) -> Prompt:
        """The served model's chat template over ``messages``, opened for the assistant."""
        text = chat_text(tok.tokenizer, messages, template_kwargs)
        return cls(text, tok.encode(text))

    def engine_input(self):
        return {"prompt_token_ids": self.ids} if self.ids is not None else self.text

    def then(self, text: str, tok: TokenCounter) -> Prompt:
        """This prompt followed by ``text``, tokenized as a whole."""
        full = self.text + text
        return Prompt(full, tok.encode(full) if self.ids is not None else None)

    def then_ids(self, text: str, ids: list[int]) -> Prompt:
        """This prompt followed by generated tokens ``ids`` (whose text is ``text``)."""
        return Prompt(self.text + text, self.ids + ids if self.ids is not None else None)

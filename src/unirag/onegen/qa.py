"""OneGen question answering prompts and answer location.

Multi-hop needs no special machinery: the model writes (sub-)questions and emits the query token
whenever it needs evidence; each query token retrieves from the index with the hidden state of
that position, the passage lands in the cache, and the model answers after its last retrieval.
The engine behind the door is :class:`unirag.onegen.engine.OneGenEngine`; evaluation runs
through :mod:`unirag.eval.harness`.
"""

from __future__ import annotations

from typing import Any

from unirag.models.decoding import EngineModel, Output


def qa_prompt(model: Any, question: str) -> str:
    """The chat prompt of ``question`` (``OneGenModel.chat_prompt`` when the model has one)."""
    if hasattr(model, "chat_prompt"):
        return model.chat_prompt(question)
    tok = EngineModel.wrap(model).tokenizer
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
    return f"user: {question}\nassistant: "


def tail_after_retrieval(out: Output, tokenizer: Any) -> str:
    """Text generated after the last retrieval (the whole text when none happened)."""
    if not out.trace:
        return out.text
    return tokenizer.decode(out.token_ids[out.trace[-1].step + 1:], skip_special_tokens=True)

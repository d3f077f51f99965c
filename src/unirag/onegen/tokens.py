"""Add the OneGen special tokens to a tokenizer and a causal LM, initialising each new embedding row
(input and, when untied, output) as the mean embedding of a short description of the token's role."""

from __future__ import annotations

from typing import Any

from unirag.onegen.config import OneGenConfig


def add_special_tokens(lm: Any, tokenizer: Any, config: OneGenConfig, init: bool = True) -> dict[str, int]:
    """Register the config's tokens (as additional special tokens), resize the embeddings and, with
    ``init``, set the new rows from the role descriptions. Returns role → token id.

    Tokens already in the vocabulary keep their rows (loading a trained model is idempotent)."""
    import torch

    names = [t.token for t in config.tokens]
    vocab = tokenizer.get_vocab()
    new = [n for n in names if n not in vocab]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
    ids = {t.role: tokenizer.convert_tokens_to_ids(t.token) for t in config.tokens}
    size = len(tokenizer)
    if lm.get_input_embeddings().weight.shape[0] < size:
        lm.resize_token_embeddings(size, mean_resizing=False)
    if init and new:
        fresh = [t for t in config.tokens if t.token in new]
        with torch.no_grad():
            _init_rows(lm.get_input_embeddings().weight, tokenizer, fresh, ids)
            out = lm.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
                _init_rows(out.weight, tokenizer, fresh, ids)
    return ids


def _init_rows(weight: Any, tokenizer: Any, specs: list, ids: dict[str, int]) -> None:
    for spec in specs:
        desc = tokenizer(spec.description, add_special_tokens=False)["input_ids"]
        if not desc:
            raise ValueError(f"token {spec.token!r}: its description tokenises to nothing")
        weight[ids[spec.role]] = weight[desc].mean(dim=0)

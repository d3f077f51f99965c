"""``OneGenModel``: any causal LM (by composition) that both generates and retrieves.

The vector of a retrieval token is the last-layer hidden state (after the final norm) at its
position, L2-normalised; documents are embedded as ``document text + document token``.

Prompt format: the base model's chat template. The assistant turn writes the query token at each
retrieval point; the inference loop then inserts ``passage_start + passage + passage_end`` (plain
text) and generation continues, e.g. for ChatML::

    <|im_start|>user\nWho directed Alien?<|im_end|>\n<|im_start|>assistant\n[RQ]<passage>Alien (film).
    Alien is a 1979 film directed by Ridley Scott...</passage>Ridley Scott<|im_end|>
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unirag.models.registry import ModelNotFoundError
from unirag.onegen.collator import encode_document, render_prompt
from unirag.onegen.config import CONFIG_FILE, OneGenConfig, default_onegen_dir
from unirag.onegen.losses import contrastive_loss
from unirag.onegen.tokens import add_special_tokens

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "onegen-smollm2"


def is_packaged_adapter(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is the adapter shipped with the package (read-only: never written to)."""
    return Path(folder).resolve() == ASSET_DIR.resolve()


@dataclass
class OneGenOutput:
    """Losses of one training forward: ``loss = lambda_lm * lm_loss + lambda_r * retrieval_loss``."""

    loss: torch.Tensor
    lm_loss: torch.Tensor
    retrieval_loss: torch.Tensor
    n_lm_tokens: int
    n_retrievals: int
    lm_sum: torch.Tensor | None = None          # sum of the token losses (with grad): lm_loss * n_lm_tokens
    query_vectors: torch.Tensor | None = None   # retrieval-token vectors [n_retrievals, d] (with grad)
    doc_vectors: torch.Tensor | None = None     # the batch's document vectors [n_documents, d] (with grad)


class OneGenModel(nn.Module):
    """A causal LM plus the OneGen tokens. ``lm`` is the transformers model (possibly a peft
    model), ``tokenizer`` has the added tokens, ``config`` is the :class:`OneGenConfig`."""

    def __init__(self, lm: Any, tokenizer: Any, config: OneGenConfig):
        super().__init__()
        self.lm = lm
        self.tokenizer = tokenizer
        self.config = config
        self._ids = {t.role: tokenizer.convert_tokens_to_ids(t.token) for t in config.tokens}

    # --- construction and persistence ----------------------------------------------------------
    @classmethod
    def from_base(cls, config: OneGenConfig | None = None, init_tokens: bool = True) -> OneGenModel:
        """Load ``config.base_model`` (alias, folder or hub id) and add the OneGen tokens."""
        from unirag.models.generator import load_causal_lm

        config = config or OneGenConfig()
        lm, tokenizer = load_causal_lm(config.base_model)
        add_special_tokens(lm, tokenizer, config, init=init_tokens)
        return cls(lm, tokenizer, config)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "cpu",
                        merge: bool = False) -> OneGenModel:
        """Load a folder written by :meth:`save_pretrained` (full model or LoRA adapter). Without
        ``path``: the default trained model, else the packaged adapter. ``merge`` folds a LoRA
        adapter into the weights (inference: same outputs, fewer matmuls; no longer trainable)."""
        from unirag.models.quiet import quiet_loading

        with quiet_loading():
            return cls._from_pretrained(path, device, merge)

    @classmethod
    def _from_pretrained(cls, path: str | os.PathLike | None, device: str, merge: bool) -> OneGenModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from unirag.models.generator import load_causal_lm

        folder = Path(path) if path is not None else _default_dir()
        if not (folder / CONFIG_FILE).is_file():
            raise ModelNotFoundError(f"{folder}: not a OneGen model folder (no {CONFIG_FILE})")
        config = OneGenConfig.load(folder / CONFIG_FILE)
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            base, tokenizer = load_causal_lm(config.base_model)
            if (folder / "tokenizer_config.json").is_file():
                tokenizer = AutoTokenizer.from_pretrained(folder)
            else:  # a bare adapter folder: the base tokenizer plus the tokens, added in config order
                add_special_tokens(base, tokenizer, config, init=False)
            base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            lm = PeftModel.from_pretrained(base, folder)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm.to(device).eval()
        model = cls(lm, tokenizer, config)
        if merge:
            model.merge_adapter()
        return model

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the model (or LoRA adapter with the new token rows), the tokenizer and the config."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if hasattr(self.lm, "peft_config"):  # adapter + the new token rows only, not whole embeddings
            self.lm.save_pretrained(path, save_embedding_layers=False)
            acfg = path / "adapter_config.json"  # name the base by its unirag name, not a local path
            acfg.write_text(json.dumps(json.loads(acfg.read_text()) | {"base_model_name_or_path":
                                                                       self.config.base_model}, indent=2) + "\n")
        else:
            self.lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.config.save(path / CONFIG_FILE)
        return path

    def merge_adapter(self) -> None:
        """Fold a LoRA adapter into the base weights (faster inference; no longer trainable as LoRA)."""
        if hasattr(self.lm, "merge_and_unload"):
            self.lm = self.lm.merge_and_unload()

    # --- accessors -----------------------------------------------------------------------------
    def token_id(self, role: str) -> int:
        """Vocabulary id of the token with ``role`` (``query``, ``document``, ``mention``, ``entity``)."""
        if role not in self._ids:
            raise KeyError(f"no token with role {role!r} (roles: {sorted(self._ids)})")
        return self._ids[role]

    @property
    def hf_model(self) -> Any:
        """The underlying transformers ``*ForCausalLM`` (unwrapped from peft)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    @property
    def decoder(self) -> Any:
        """The transformer body (``model.model`` for Llama, ``transformer`` for GPT-2): hidden states
        after the final norm, no LM head."""
        return self.hf_model.base_model

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.lm.parameters()).device

    def chat_prompt(self, user: str, assistant_prefix: str = "") -> str:
        """The prompt text for ``user`` in the base model's chat template, with the assistant turn
        opened and ``assistant_prefix`` appended (e.g. the query token)."""
        messages = [{"role": "user", "content": user}]
        if self.config.system_prompt:
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return render_prompt(self.tokenizer, messages) + assistant_prefix

    # --- vectors -------------------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last-layer hidden states after the final norm, ``[batch, seq, hidden]``."""
        out = self.decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    @staticmethod
    def hidden_to_vector(h: torch.Tensor) -> torch.Tensor:
        """A retrieval vector from a final-norm hidden state: L2-normalised along the last axis."""
        return F.normalize(h.float(), dim=-1)

    @torch.no_grad()
    def embed_documents(self, texts: list[str], batch_size: int = 32, progress: bool = False,
                        role: str = "document") -> np.ndarray:
        """``float32 [n, hidden]`` unit vectors of ``text + document token`` (text truncated to
        ``config.max_doc_tokens``), computed in length-sorted batches."""
        seqs = [encode_document(self.tokenizer, t, self.token_id(role), self.config.max_doc_tokens) for t in texts]
        return self._vectors_at_end(seqs, batch_size, progress, "embedding documents")

    @torch.no_grad()
    def query_vectors(self, contexts: list[str], batch_size: int = 16, role: str = "query") -> np.ndarray:
        """``float32 [n, hidden]`` unit vectors at the final token of each context, which must be the
        token of ``role`` (e.g. ``chat_prompt(question, "[RQ]")``)."""
        tid = self.token_id(role)
        seqs = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in contexts]
        for i, s in enumerate(seqs):
            if not s or s[-1] != tid:
                raise ValueError(f"context {i} does not end with the {role} token {self.config.token(role)!r}")
        return self._vectors_at_end(seqs, batch_size, False, "")

    def _vectors_at_end(self, seqs: list[list[int]], batch_size: int, progress: bool, desc: str) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            return vectors_at_end(self.decoder, self.hidden_to_vector, seqs, self.tokenizer.pad_token_id,
                                  batch_size, progress=progress, desc=desc)
        finally:
            self.train(was_training)

    # --- training ------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> OneGenOutput:
        """Joint loss on a collated batch (see :mod:`unirag.onegen.collator`)."""
        cfg = self.config
        h = self.hidden_states(batch["input_ids"], batch["attention_mask"])
        lm_loss, n_tok = self.lm_loss(h, batch["labels"])
        ret_loss = h.new_zeros(())
        q = d = None
        n_ret = int(batch["ret_rows"].numel())
        if n_ret and batch["doc_input_ids"].numel():
            q = self.pick_vectors(h, batch["ret_rows"], batch["ret_pos"], batch["attention_mask"])
            hd = self.hidden_states(batch["doc_input_ids"], batch["doc_attention_mask"])
            dpos = batch["doc_attention_mask"].sum(1) - 1
            d = self.pick_vectors(hd, torch.arange(len(dpos), device=hd.device), dpos, batch["doc_attention_mask"])
            ret_loss = contrastive_loss(q, d, batch["pos_mask"], batch["neg_mask"], batch["cand_mask"],
                                        kind=cfg.loss, temperature=cfg.temperature)
        loss = cfg.lambda_lm * lm_loss + cfg.lambda_r * ret_loss
        return OneGenOutput(loss, lm_loss.detach(), ret_loss.detach(), n_tok, n_ret, lm_loss * n_tok, q, d)

    def pick_vectors(self, h: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """Retrieval vectors at ``(rows, pos)`` of hidden states ``h``. With ``normalize='sequence'``
        (reference-code reproduction only) hidden states are first normalised over the sequence axis."""
        if self.config.normalize == "sequence":
            return F.normalize(h.float(), dim=1)[rows, pos]
        return self.hidden_to_vector(h[rows, pos])

    def lm_loss(self, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Mean next-token cross-entropy over labelled positions only: the LM head runs on those
        hidden states alone, so no ``[batch, seq, vocab]`` logits are ever built."""
        losses, _ = self.token_losses(h, labels)
        if losses.numel() == 0:
            return h.new_zeros(()), 0
        return losses.mean(), int(losses.numel())

    def token_losses(self, h: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token cross-entropy and targets at every labelled position (labels aligned with inputs)."""
        target = labels[:, 1:]
        sel = target != -100
        hs = h[:, :-1][sel]
        logits = self.hf_model.get_output_embeddings()(hs).float()
        cap = getattr(self.hf_model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return F.cross_entropy(logits, target[sel], reduction="none"), target[sel]


def vectors_at_end(decoder: Any, to_vector: Any, seqs: list[list[int]], pad_id: int, batch_size: int = 16,
                   progress: bool = False, desc: str = "embedding", bar: Any = None) -> np.ndarray:
    """``float32 [n, hidden]``: ``to_vector`` of the last-layer hidden state at the last token of each
    sequence, computed by ``decoder`` (a transformer body) in length-sorted, right-padded batches.
    The one embedding loop of OneGen: document, entity and query vectors all come from here."""
    order = np.argsort([-len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), decoder.config.hidden_size), dtype=np.float32)
    own = bar is None and progress
    if own:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc=desc, unit=" texts")
    dev = next(decoder.parameters()).device
    with torch.inference_mode():
        for s in range(0, len(seqs), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = pad_right([seqs[i] for i in idx], pad_id, dev)
            h = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            last = mask.sum(1) - 1
            out[idx] = to_vector(h[torch.arange(len(idx), device=dev), last]).float().cpu().numpy()
            if bar is not None:
                bar.update(len(idx))
    if own:
        bar.close()
    return out


def pad_right(seqs: list[list[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists to the longest one: ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _default_dir() -> Path:
    folder = default_onegen_dir()
    if (folder / CONFIG_FILE).is_file():
        return folder
    if (ASSET_DIR / CONFIG_FILE).is_file():
        return ASSET_DIR
    raise ModelNotFoundError(
        f"no trained OneGen model at {folder} and no packaged adapter at {ASSET_DIR}: "
        "train one with `unirag train onegen --config configs/onegen_smollm2.yaml`"
    )


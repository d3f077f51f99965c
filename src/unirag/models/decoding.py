"""The KV-cache decoding loop of every causal generator; with a retriever, OneGen's loop.

Plain generation (retrieve-then-read, closed book) is this loop without a retriever. With one,
the loop is OneGen's (Zhang et al. 2024): one model generates and retrieves. When a row emits the
query token, the forward step that consumes it already computes the
last-layer hidden state at that position: that vector searches the index, the retrieved passage
(wrapped in the passage markers) is prefilled onto the row's cache, and decoding goes on. No
second model, no re-encoding of the prefix, no extra forward beyond the passage prefill.

Rows of a batch decode together; each forward feeds every row its own pending tokens (one
generated token, or a whole passage), right-padded within the step. Padding slots stay in the
cache as masked holes and position ids count only real tokens, so every row sees exactly the
attention and positions of its own unpadded sequence.

The loop is :func:`decode`; :class:`Decoder` wraps it as ``generate(prompts, params)`` /
``stream(prompts, params)``. Each row samples with its own ``torch.Generator`` (the request's seed),
so rows and concurrent requests never share random state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirag.models.kv_cache import new_cache
from unirag.sampling_params import SamplingParams

__all__ = ["Decoder", "DoneEvent", "EngineModel", "Event", "Output", "Retrieval", "RetrievalEvent",
           "SamplingParams", "TextEvent", "cut_words", "decode", "passage_ids", "split_lm"]

PromptLike = str | Sequence[int]
PassageCache = dict[tuple[int, int | None, int], list[int]]  # (row, words, tokens) -> passage token ids


# --- results and events ----------------------------------------------------------------------
@dataclass
class Retrieval:
    """One retrieval of one row: at generation ``step`` (index of the query token among the
    generated tokens) and absolute ``position``; the candidate ``ids``/``scores`` best first,
    and the ``inserted`` ids (empty when the threshold refused them)."""

    step: int
    position: int
    ids: list[str]
    scores: list[float]
    inserted: list[str]
    n_tokens: int = 0
    vector: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (without the vector)."""
        return {"step": self.step, "position": self.position, "ids": self.ids,
                "scores": [round(float(s), 6) for s in self.scores], "inserted": self.inserted,
                "n_tokens": self.n_tokens}


@dataclass
class Output:
    """A finished row: answer ``text`` (special tokens removed), ``raw_text``, the generated
    token ids, the full token sequence (prompt + generated + inserted passages), the trace."""

    index: int
    text: str
    raw_text: str
    token_ids: list[int]
    sequence: list[int]
    trace: list[Retrieval]
    finish_reason: str

    @property
    def sources(self) -> list[str]:
        """Ids of the inserted passages, in order."""
        return [pid for r in self.trace for pid in r.inserted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"index": self.index, "text": self.text, "finish_reason": self.finish_reason,
                "n_generated": len(self.token_ids), "sources": self.sources,
                "trace": [r.to_dict() for r in self.trace]}


@dataclass
class TextEvent:
    """New text of row ``index``."""

    index: int
    text: str


@dataclass
class RetrievalEvent:
    """Row ``index`` retrieved (and maybe inserted) passages."""

    index: int
    retrieval: Retrieval
    passages: list[Any] = field(default_factory=list)


@dataclass
class DoneEvent:
    """Row ``index`` finished."""

    index: int
    output: Output


Event = TextEvent | RetrievalEvent | DoneEvent


# --- the model protocol ------------------------------------------------------------------------
@dataclass
class EngineModel:
    """What the loop needs: a causal LM and its tokenizer; for retrieval, the query token id, the
    passage marker texts and a hidden-state → vector map (default: L2 normalisation). A plain LM
    (``query_token_id`` ``None``) only generates."""

    lm: Any
    tokenizer: Any
    query_token_id: int | None = None
    passage_open: str = "<passage>"
    passage_close: str = "</passage>"
    to_vector: Callable[[Any], Any] | None = None
    name: str = ""
    document_token_id: int | None = None
    entity_token_id: int | None = None

    @classmethod
    def wrap(cls, model: Any) -> EngineModel:
        """Accept an :class:`EngineModel`, a ``OneGenModel`` (``.lm``, ``.tokenizer``,
        ``.config``, ``token_id(role)``, ``hidden_to_vector``) or a plain generator (``.model``,
        ``.tokenizer``: :class:`unirag.models.Generator`)."""
        if isinstance(model, EngineModel):
            return model
        if not hasattr(model, "token_id"):
            return cls(model.model, model.tokenizer, name=str(getattr(model, "name", "") or ""))
        cfg = getattr(model, "config", None)
        opened = getattr(cfg, "passage_open", None) or getattr(cfg, "passage_start", None) or "<passage>"
        closed = getattr(cfg, "passage_close", None) or getattr(cfg, "passage_end", None) or "</passage>"
        roles = {}
        for role in ("document", "entity"):
            try:
                roles[role] = int(model.token_id(role))
            except (KeyError, ValueError):
                roles[role] = None
        return cls(model.lm, model.tokenizer, int(model.token_id("query")), opened, closed,
                   getattr(model, "hidden_to_vector", None), str(getattr(model, "name", "") or ""),
                   roles["document"], roles["entity"])

    def vectors(self, hidden: Any) -> Any:
        """Retrieval vectors from last-layer hidden states ``[n, d]``."""
        if self.to_vector is not None:
            return self.to_vector(hidden)
        import torch

        return torch.nn.functional.normalize(hidden.float(), dim=-1)


def split_lm(lm: Any) -> tuple[Any, Any]:
    """``(decoder, lm_head)`` of a causal LM (plain or peft-wrapped), so that logits are computed
    only where needed; the decoder returns the final-norm hidden states."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    decoder = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    head = base.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"cannot find the decoder and head of {type(base).__name__}")
    return decoder, head


# --- the loop ----------------------------------------------------------------------------------
class _Row:
    """Decoding state of one prompt."""

    def __init__(self, index: int, prompt: list[int], params: SamplingParams):
        import torch

        self.index = index
        self.params = params
        self.gen = params.generator()
        self.sequence = list(prompt)
        self.generated: list[int] = []
        self.pending: list[int] = list(prompt)
        self.trace: list[Retrieval] = []
        self.inserted: set[int] = set()
        self.emitted = ""
        self.done = ""


Admit = Callable[[], Sequence[tuple[list[int], SamplingParams]]]


def decode(model: EngineModel, index: Any, prompts: Sequence[list[int]],
           params: SamplingParams | Sequence[SamplingParams],
           cancelled: Callable[[int], bool] | None = None, admit: Admit | None = None,
           group_prefill: float = 1.5) -> Iterator[Event]:
    """The loop: decode ``prompts`` (token ids) together, retrieving from ``index`` (a dense
    retriever with ``search_vectors(vectors, k, exclude=...)`` and ``store``, or ``None``) at every
    query token; ``params``
    is one :class:`SamplingParams` for all rows or one per row. ``cancelled(i)``, asked after every
    step, ends row ``i`` there (finish reason ``cancelled``; the other rows go on). ``admit()``,
    asked before every step, returns new ``(prompt ids, params)`` rows that join the running batch
    (continuous batching: their prompts prefill while the other rows decode); they are numbered on
    after the rows before them. Rows that prefill at the same step (passages, new prompts) whose
    lengths are within a factor ``group_prefill`` of each other run as one forward (``0``: each
    prefilling row alone).
    Yields :class:`TextEvent`, :class:`RetrievalEvent` and :class:`DoneEvent`."""
    import torch

    decoder, head = split_lm(model.lm)
    cap = getattr(decoder.config, "final_logit_softcapping", None)
    tok = model.tokenizer
    eos = _eos_ids(model)
    per_row = [params] * len(prompts) if isinstance(params, SamplingParams) else list(params)
    if len(per_row) != len(prompts):
        raise ValueError(f"{len(per_row)} SamplingParams for {len(prompts)} prompts")
    rows = [_Row(i, list(p), q) for i, (p, q) in enumerate(zip(prompts, per_row))]
    if any(not r.pending for r in rows):
        raise ValueError("empty prompt")
    state = _Cache(decoder, tok.pad_token_id if tok.pad_token_id is not None else 0, len(rows), group_prefill)
    active = list(rows)  # rows still in the cache, in cache order
    passage_tokens: PassageCache = {}
    with torch.inference_mode():
        while True:
            if admit is not None:
                new = [_Row(len(rows) + j, list(p), q) for j, (p, q) in enumerate(admit())]
                if any(not r.pending for r in new):
                    raise ValueError("empty prompt")
                rows += new
                active += new
                state.grow(len(new))
            if not active:
                break
            fed = [r.pending for r in active]
            last = state.forward(fed)
            for r in active:
                r.pending = []
            # rows whose last fed token is a generated query token retrieve now
            want = [b for b, r in enumerate(active) if _wants_retrieval(r, fed[b], model, index)]
            inserted = set()
            if want:
                qv = model.vectors(last[want]).float().cpu().numpy()
                for j, b in enumerate(want):
                    event = _retrieve(active[b], qv[j], index, model, passage_tokens, int(state.npos[b]) - 1)
                    if event.retrieval.inserted:
                        inserted.add(b)
                    yield event
            need = [b for b in range(len(active)) if b not in inserted]
            if need:
                logits = head(last[need]).float().cpu()
                if cap:  # final-logit soft-capping (Gemma-style configs)
                    logits = torch.tanh(logits / cap) * cap
                for j, b in enumerate(need):
                    r = active[b]
                    text = _next_token(r, logits[j], model, index, eos)
                    if text:
                        yield TextEvent(r.index, text)
            if cancelled is not None:
                for r in active:
                    if not r.done and cancelled(r.index):
                        r.done = "cancelled"
            keep = [b for b, r in enumerate(active) if not r.done]
            for r in active:
                if r.done:
                    yield DoneEvent(r.index, _output(r, tok))
            if len(keep) < len(active):
                state.select(keep)
                active = [active[b] for b in keep]


class _Cache:
    """The batch's KV cache, its 2-D attention mask (holes = 0) and each row's next position."""

    def __init__(self, decoder: Any, pad: int, n: int, group_prefill: float = 1.5):
        import torch

        self.decoder, self.pad, self.group_prefill = decoder, pad, group_prefill
        self.dev = next(decoder.parameters()).device
        self.cache = new_cache(decoder.config)
        self.mask = torch.zeros((n, 0), dtype=torch.long)
        self.npos = torch.zeros(n, dtype=torch.long)

    def grow(self, n: int) -> None:
        """Append ``n`` empty rows (all their columns holes) for rows joining the batch."""
        import torch

        if n <= 0:
            return
        self.mask = torch.cat([self.mask, self.mask.new_zeros((n, self.mask.shape[1]))])
        self.npos = torch.cat([self.npos, self.npos.new_zeros(n)])
        for lay in self.cache.layers:
            if getattr(lay, "keys", None) is None or not lay.keys.numel():
                continue
            lay.keys = torch.cat([lay.keys, lay.keys.new_zeros((n, *lay.keys.shape[1:]))])
            lay.values = torch.cat([lay.values, lay.values.new_zeros((n, *lay.values.shape[1:]))])

    def _run(self, cache: Any, mask: Any, npos: Any, fed: list[list[int]]) -> tuple[Any, Any]:
        """One forward of rows ``fed`` (right-padded) on ``cache``; ``(last hidden [n, d], step mask)``."""
        import torch

        width = max(len(f) for f in fed)
        ids = torch.full((len(fed), width), self.pad, dtype=torch.long)
        step = torch.zeros((len(fed), width), dtype=torch.long)
        for b, f in enumerate(fed):
            ids[b, : len(f)] = torch.tensor(f)
            step[b, : len(f)] = 1
        lengths = step.sum(1)
        pos = torch.minimum(npos[:, None] + torch.arange(width)[None, :], (npos + lengths - 1)[:, None])
        out = self.decoder(input_ids=ids.to(self.dev), attention_mask=torch.cat([mask, step], 1).to(self.dev),
                           position_ids=pos.to(self.dev), past_key_values=cache, use_cache=True)
        h = out.last_hidden_state
        return h[torch.arange(len(fed), device=self.dev), (lengths - 1).to(self.dev)], step

    def forward(self, fed: list[list[int]]) -> Any:
        """Feed every row its pending tokens; the last-layer hidden state at each row's last token.

        Rows that decode one token run as one batched forward. Rows that prefill (a prompt, a
        passage) run on their slice of the cache, grouped by length: rows within a factor
        ``group_prefill`` of the shortest in their group share one forward (passages cut to the
        same words retrieved at one step do), so the weights are read once for all of them, while
        rows of very different lengths run apart rather than pay for padding to the widest. The
        groups' new columns are merged back (a row's columns past its own tokens are masked holes)."""
        import torch

        short = [b for b, f in enumerate(fed) if len(f) == 1]
        groups: list[list[int]] = []
        for b in sorted((b for b, f in enumerate(fed) if len(f) > 1), key=lambda b: len(fed[b])):
            if groups and len(fed[b]) <= self.group_prefill * len(fed[groups[-1][0]]):
                groups[-1].append(b)
            else:
                groups.append([b])
        groups += [short] if short else []
        if len(groups) == 1:
            last, step = self._run(self.cache, self.mask, self.npos, fed)
        else:
            t = self.mask.shape[1]
            width = max(len(f) for f in fed)
            cached = self._cached()
            last, subs = None, []
            for group in groups:
                sel = torch.tensor(group, device=self.dev)
                sub = new_cache(self.decoder.config,
                                [(lay.keys[sel], lay.values[sel]) for lay in self.cache.layers] if cached else None)
                h, _ = self._run(sub, self.mask[group], self.npos[group], [fed[b] for b in group])
                if last is None:
                    last = h.new_empty((len(fed), h.shape[-1]))
                last[sel] = h
                subs.append((sel, sub))
            merged = []
            for i in range(len(subs[0][1].layers)):
                k0 = subs[0][1].layers[i].keys
                shape = (len(fed), k0.shape[1], t + width, k0.shape[3])
                keys, values = k0.new_zeros(shape), k0.new_zeros(shape)
                for sel, sub in subs:
                    n = sub.layers[i].keys.shape[2]
                    keys[sel, :, :n], values[sel, :, :n] = sub.layers[i].keys, sub.layers[i].values
                merged.append((keys, values))
            self.cache = new_cache(self.decoder.config, merged)
            step = torch.zeros((len(fed), width), dtype=torch.long)
            for b, f in enumerate(fed):
                step[b, : len(f)] = 1
        self.mask = torch.cat([self.mask, step], 1)
        self.npos += torch.tensor([len(f) for f in fed])
        self.compact()
        return last

    def _cached(self) -> bool:
        """Whether the cache holds keys yet (not before the first forward, nor after every row ended)."""
        return any(getattr(lay, "keys", None) is not None and lay.keys.numel() for lay in self.cache.layers)

    def compact(self, max_holes: float = 0.25) -> None:
        """Left-pack each row's real columns once holes exceed ``max_holes`` of the cache.

        Cached keys already carry their rotary positions and attention ignores key order under the
        mask, so moving columns changes nothing but the cost: rows retrieving at different steps
        would otherwise leave every other row a hole as wide as each passage."""
        import torch

        real = self.mask.bool()
        width = int(real.sum(1).max())
        if width >= self.mask.shape[1] * (1 - max_holes):
            return
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)[:, :width]
        idx = order.to(self.dev)
        for lay in self.cache.layers:
            if getattr(lay, "keys", None) is None or not lay.keys.numel():
                continue
            g = idx[:, None, :, None].expand(-1, lay.keys.shape[1], -1, lay.keys.shape[3])
            lay.keys, lay.values = torch.gather(lay.keys, 2, g), torch.gather(lay.values, 2, g)
        self.mask = torch.gather(self.mask, 1, order)

    def select(self, keep: list[int]) -> None:
        """Keep only rows ``keep``; drop columns that are holes in every remaining row."""
        import torch

        if not keep:  # every row ended: an empty cache (rows may still join)
            self.cache = new_cache(self.decoder.config)
            self.mask, self.npos = self.mask[:0, :0], self.npos[:0]
            return
        sel = torch.tensor(keep)
        self.cache.batch_select_indices(sel.to(self.dev))
        self.mask, self.npos = self.mask[sel], self.npos[sel]
        live = self.mask.any(dim=0)
        if not bool(live.all()):
            _drop_columns(self.cache, live.to(self.dev))
            self.mask = self.mask[:, live]


def repeated_ngram_tokens(tokens: Sequence[int], n: int) -> set[int]:
    """The tokens that would complete an ``n``-gram already in ``tokens`` (what ``no_repeat_ngram``
    bans at the next step)."""
    if n < 1:
        return set()
    tail = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == tail}


def _next_token(r: _Row, logits: Any, model: EngineModel, index: Any, eos: set[int]) -> str:
    """Choose row ``r``'s next token (forced query token, or sampled with the query token banned
    once the retrieval budget is spent), append it, return the new text."""
    p = r.params
    q = model.query_token_id
    if q is not None and (len(r.trace) >= p.max_retrievals or index is None):
        logits[q] = float("-inf")
    budget = q is not None and len(r.trace) < p.max_retrievals and index is not None
    if p.repetition_penalty != 1.0:  # as transformers: divide positive logits, multiply negative ones
        import torch

        seen = torch.tensor(sorted(set(r.sequence)), dtype=torch.long)
        vals = logits[seen]
        logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
    if p.no_repeat_ngram:  # None (an engine left it unset) or 0: off
        # the query token is a retrieval, not text: max_retrievals is its limit
        banned = repeated_ngram_tokens(r.generated, p.no_repeat_ngram) - {q}
        if banned:
            logits[sorted(banned)] = float("-inf")
    if budget and (len(r.generated) in p.force_query_at or (
            p.retrieve_prob is not None
            and float(logits.float().softmax(-1)[model.query_token_id]) >= p.retrieve_prob)):
        t = model.query_token_id
    else:
        t = _sample(logits, p, r.gen)
    r.generated.append(t)
    r.sequence.append(t)
    r.pending = [t]
    return _check_stop(r, t, eos, p, model.tokenizer)


def _wants_retrieval(r: _Row, fed: list[int], model: EngineModel, index: Any) -> bool:
    return (index is not None and model.query_token_id is not None and len(fed) == 1 and bool(r.generated)
            and fed[0] == r.generated[-1]
            and fed[0] == model.query_token_id and len(r.trace) < r.params.max_retrievals)


def _retrieve(r: _Row, qvec: np.ndarray, index: Any, model: EngineModel, cache: PassageCache, position: int,
              ) -> RetrievalEvent:
    """Search, skip passages already in the row, queue the passage tokens for prefill. One search per
    row: FAISS may order exactly tied scores differently in a many-query search, and a row must get
    the passages it would get alone."""
    params = r.params
    k = 1 if params.k is None else params.k
    res = index.search_vectors(qvec[None, :], max(params.candidates, k, 1), exclude=[r.inserted])
    scores, hits = res.scores[0], res.rows[0]
    ok = [j for j in range(len(hits)) if hits[j] >= 0]
    chosen = ok[:k]
    if params.threshold is not None:
        chosen = [j for j in chosen if scores[j] >= params.threshold]
    ids = index.store.ids(hits[ok])
    tokens: list[int] = []
    passages = [index.store[int(hits[j])] for j in chosen]
    for j, p in zip(chosen, passages):
        row = int(hits[j])
        key = (row, params.max_passage_words, params.max_passage_tokens)
        if key not in cache:
            cache[key] = passage_ids(model, cut_words(p.contents, params.max_passage_words),
                                     params.max_passage_tokens)
        tokens += cache[key]
        r.inserted.add(row)
    ret = Retrieval(step=len(r.generated) - 1, position=position, ids=ids,
                    scores=[float(scores[j]) for j in ok], inserted=[p.id for p in passages],
                    n_tokens=len(tokens), vector=qvec.copy() if params.keep_vectors else None)
    r.trace.append(ret)
    r.pending = tokens
    r.sequence += tokens
    return RetrievalEvent(r.index, ret, passages)


def cut_words(text: str, words: int | None) -> str:
    """The first ``words`` words of ``text``, with `` ...`` when cut (``None``: unchanged)."""
    parts = text.split()
    return text if words is None or len(parts) <= words else " ".join(parts[:words]) + " ..."


def passage_ids(model: EngineModel, text: str, max_tokens: int) -> list[int]:
    """Token ids of ``passage_open + text + passage_close``, the text cut to ``max_tokens``."""
    tok = model.tokenizer
    body = tok(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return (tok(model.passage_open, add_special_tokens=False)["input_ids"] + body
            + tok(model.passage_close, add_special_tokens=False)["input_ids"])


def _sample(logits: Any, params: SamplingParams, gen: Any) -> int:
    import torch

    if params.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        cut = torch.cumsum(sp, dim=-1) - sp > params.top_p
        sp[cut] = 0
        probs = torch.zeros_like(probs).scatter(0, si, sp)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=gen))


def _eos_ids(model: EngineModel) -> set[int]:
    ids = set()
    eos = model.tokenizer.eos_token_id
    if eos is not None:
        ids.add(int(eos))
    cfg_eos = getattr(getattr(model.lm, "generation_config", None), "eos_token_id", None)
    if isinstance(cfg_eos, int):
        ids.add(cfg_eos)
    elif cfg_eos:
        ids.update(int(e) for e in cfg_eos)
    return ids


def _text(r: _Row, tok: Any) -> str:
    return tok.decode(r.generated, skip_special_tokens=True)


def _check_stop(r: _Row, t: int, eos: set[int], params: SamplingParams, tok: Any) -> str:
    """Mark the row done on EOS, a stop string or the token budget; return its new text."""
    if t in eos:
        r.done = "stop"
    text = _text(r, tok)
    for s in params.stop:
        at = text.find(s, max(0, len(r.emitted) - len(s)))
        if at >= 0:
            text, r.done = text[:at], "stop"
    if not r.done and len(r.generated) >= params.max_new_tokens:
        r.done = "length"
    if not r.done and text.endswith("\ufffd"):
        return ""  # an incomplete multi-byte character: wait for the next token
    new = text[len(r.emitted):] if text.startswith(r.emitted) else ""
    r.emitted = text
    return new


def _output(r: _Row, tok: Any) -> Output:
    return Output(r.index, r.emitted, tok.decode(r.generated, skip_special_tokens=False),
                  list(r.generated), list(r.sequence), list(r.trace), r.done)


def _drop_columns(cache: Any, live: Any) -> None:
    """Remove sequence positions that no remaining row attends to (dynamic cache layers)."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys[:, :, live]
            layer.values = layer.values[:, :, live]


# --- wrapper -------------------------------------------------------------------------------------
class Decoder:
    """``generate(prompts, params)`` / ``stream(prompts, params)`` over one causal LM and, for
    OneGen, a document retriever searched at the query token (``None``: plain generation);
    ``group_prefill`` as in :func:`decode`."""

    def __init__(self, model: Any, index: Any = None, group_prefill: float = 1.5):
        self.model = EngineModel.wrap(model)
        self.index = index
        self.group_prefill = group_prefill

    def encode(self, prompts: PromptLike | Sequence[PromptLike]) -> list[list[int]]:
        """Token ids of each prompt (strings are tokenized with the tokenizer's special tokens)."""
        if isinstance(prompts, str) or (len(prompts) and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        tok = self.model.tokenizer
        return [tok(p)["input_ids"] if isinstance(p, str) else list(p) for p in prompts]

    def stream(self, prompts: PromptLike | Sequence[PromptLike],
               params: SamplingParams | Sequence[SamplingParams] | None = None,
               cancelled: Callable[[int], bool] | None = None, admit: Admit | None = None) -> Iterator[Event]:
        """Events as they happen: text pieces, retrievals, finished rows (see :func:`decode`;
        ``admit`` adds rows to the running batch)."""
        yield from decode(self.model, self.index, self.encode(prompts), params or SamplingParams(), cancelled,
                          admit, self.group_prefill)

    def generate(self, prompts: PromptLike | Sequence[PromptLike], params: SamplingParams | None = None,
                 ) -> list[Output]:
        """Finished outputs, one per prompt, in prompt order."""
        done = [e.output for e in self.stream(prompts, params) if isinstance(e, DoneEvent)]
        return sorted(done, key=lambda o: o.index)

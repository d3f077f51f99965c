"""Entity linking with one OneGen model, and the mention data it is trained on.

Format: the user turn asks to link a text; the assistant copies the text, opening each mention
with :data:`MENTION_OPEN` and closing it with the mention token, e.g.
``<m>Leonardo da Vinci[RM] painted the <m>Mona Lisa[RM].`` The vector of each mention token
(hidden state at that position, as for queries) is matched against entity vectors: ``title.
description. summary`` followed by the entity token, for every article of the Wikipedia corpus.

Mention data (:func:`find_mentions`): in each Wikipedia summary, the mentions of *other* corpus
articles are the case-sensitive, word-bounded occurrences of an article title, with a trailing
parenthetical qualifier removed (``"Alien (film)"`` → ``"Alien"``); a surface must start with an
upper-case letter and have at least 4 characters; a surface shared by several titles links to the
title equal to it, or is skipped when none is; matching is left to right, longest surface first,
without overlaps; a match inside a longer run of capitalised words (``Douglas Rain``, ``A Space
Odyssey``; a leading The/A/An does not count) is no mention; only the first occurrence of each
entity in a text is kept, and the article's own title is never a mention. Documents are split
into training and held-out sets by a hash of their title.
"""

from __future__ import annotations

import os
from pathlib import Path

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EntityLinker", "LinkedSpan", "Mention", "TitleMatcher", "best_threshold", "build_entity_index",
           "dev_linking_docs", "entity_passages", "find_mentions", "heldout_linking_docs", "linking_examples",
           "linking_scores", "parse_links", "read_threshold", "tune_threshold", "write_linking_data",
           "write_threshold"]

MENTION_OPEN = "<m>"
LINKING_FILE = "linking.json"  # in a model folder: the tuned NIL threshold
INSTRUCTION = "Mark and link the named entities in this text:\n"
_QUALIFIER = re.compile(r"\s*\([^()]*\)$")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_DETERMINERS = {"The", "A", "An"}


@dataclass
class Mention:
    """A span ``text[start:end]`` that refers to entity ``entity``."""

    start: int
    end: int
    surface: str
    entity: str


@dataclass
class LinkedSpan:
    """A predicted mention: span (``-1`` when it could not be aligned), best entity and score,
    and the other candidates ``(id, score)``."""

    start: int
    end: int
    surface: str
    entity: str
    score: float
    candidates: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"start": self.start, "end": self.end, "surface": self.surface, "entity": self.entity,
                "score": round(self.score, 6), "candidates": [[e, round(s, 6)] for e, s in self.candidates]}


# --- mention data ------------------------------------------------------------------------------
class TitleMatcher:
    """Surface → title lookup built from article titles (see the module docstring for the rules)."""

    def __init__(self, titles: Iterable[str], min_chars: int = 4):
        by_surface: dict[str, set[str]] = {}
        for t in titles:
            s = _QUALIFIER.sub("", t).strip()
            if len(s) >= min_chars and s[0].isupper():
                by_surface.setdefault(s, set()).add(t)
        self.surface: dict[str, str] = {}
        for s, ts in by_surface.items():
            if len(ts) == 1:
                self.surface[s] = next(iter(ts))
            elif s in ts:
                self.surface[s] = s
        self.max_tokens = max((len(_TOKEN.findall(s)) for s in self.surface), default=0)

    def find(self, text: str, exclude: str = "") -> list[Mention]:
        """Mentions in ``text``: longest match first, no overlaps, first occurrence per entity."""
        toks = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        seen, out, i = {exclude}, [], 0
        while i < len(toks):
            hit = None
            for n in range(min(self.max_tokens, len(toks) - i), 0, -1):
                start, end = toks[i][0], toks[i + n - 1][1]
                title = self.surface.get(text[start:end])
                if title is not None:
                    hit = (n, Mention(start, end, text[start:end], title))
                    break
            if hit is None or self._inside_name(text, toks, i, hit[0]):
                i += 1
                continue
            n, m = hit
            if m.entity not in seen:
                out.append(m)
                seen.add(m.entity)
            i += n
        return out


    @staticmethod
    def _inside_name(text: str, toks: list[tuple[int, int]], i: int, n: int) -> bool:
        """Whether the match is part of a longer capitalised name (``Douglas Rain``)."""
        def cap(j: int) -> bool:
            word = text[toks[j][0] : toks[j][1]]
            return word[:1].isupper() and word not in _DETERMINERS

        return (i > 0 and cap(i - 1)) or (i + n < len(toks) and cap(i + n))


def find_mentions(text: str, matcher: TitleMatcher, own_title: str = "") -> list[Mention]:
    """The mentions of corpus entities in ``text`` (the document's ``own_title`` excluded)."""
    return matcher.find(text, exclude=own_title)


def mark(text: str, mentions: Sequence[Mention], mention_token: str) -> str:
    """``text`` with each mention written ``<m>surface[RM]``."""
    out, at = [], 0
    for m in sorted(mentions, key=lambda m: m.start):
        out += [text[at : m.start], MENTION_OPEN, text[m.start : m.end], mention_token]
        at = m.end
    return "".join(out + [text[at:]])


def is_heldout(title: str, fraction: float = 0.1) -> bool:
    """Deterministic document split: held out when the title's hash falls in ``fraction``."""
    h = int.from_bytes(hashlib.blake2b(title.encode("utf-8"), digest_size=8).digest(), "little")
    return (h % 10_000) < fraction * 10_000


def linking_examples(summaries: dict[str, dict], mention_token: str = "[RM]", split: str = "train",
                     heldout_fraction: float = 0.1, max_words: int = 80) -> list[dict[str, Any]]:
    """Training (or held-out) examples, one per summary with at least one mention (the text is
    the summary cut to ``max_words`` words): ``id``, ``messages`` and ``retrievals`` form the
    OneGen JSONL schema; ``text`` and ``mentions`` (gold spans) are extra keys."""
    matcher = TitleMatcher(summaries)
    rows = []
    for title, rec in summaries.items():
        if is_heldout(title, heldout_fraction) != (split == "heldout"):
            continue
        text = " ".join(str(rec.get("extract", "")).split()[:max_words])
        mentions = find_mentions(text, matcher, title)
        if not mentions:
            continue
        rows.append({"id": f"el:{title}",
                     "messages": [{"role": "user", "content": INSTRUCTION + text},
                                  {"role": "assistant", "content": mark(text, mentions, mention_token)}],
                     "retrievals": [{"positives": [m.entity]} for m in mentions],
                     "text": text, "mentions": [dataclasses.asdict(m) for m in mentions]})
    return rows


def entity_passages(summaries: dict[str, dict] | None = None) -> list[Any]:
    """The knowledge base: one passage per article, id = title, text = description + summary
    (so ``contents`` = ``title. description. summary``)."""
    from unirag.corpus.passage import Passage
    from unirag.data import wiki_summaries

    summaries = summaries if summaries is not None else wiki_summaries()
    out = []
    for title, rec in summaries.items():
        desc = str(rec.get("description") or "").strip()
        body = str(rec.get("extract", "")).strip()
        out.append(Passage(id=title, title=title, text=f"{desc}. {body}" if desc else body))
    return out


def write_linking_data(out_dir: str, heldout_fraction: float = 0.1) -> dict[str, int]:
    """Write ``train.jsonl`` and ``heldout.jsonl`` (OneGen schema), ``heldout-gold.jsonl`` (text and
    gold spans) and ``entities.jsonl`` (the knowledge base as a corpus file) into ``out_dir``."""
    import json
    from pathlib import Path

    from unirag.data import wiki_summaries

    summaries = wiki_summaries()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "heldout"):
        rows = linking_examples(summaries, split=split, heldout_fraction=heldout_fraction)
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                row = {k: r[k] for k in ("id", "messages", "retrievals")}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        if split == "heldout":
            with open(out / "heldout-gold.jsonl", "w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps({k: r[k] for k in ("id", "text", "mentions")}, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
        counts[f"{split}_mentions"] = sum(len(r["retrievals"]) for r in rows)
    with open(out / "entities.jsonl", "w", encoding="utf-8") as fh:
        for p in entity_passages(summaries):
            fh.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
    counts["entities"] = len(summaries)
    return counts


def build_entity_index(out: Any, model: Any, name: str = "", progress: bool = True,
                       summaries: dict[str, dict] | None = None) -> Any:
    """The entity index folder: knowledge-base passages embedded with the entity token."""
    from unirag.onegen.docindex import build_onegen_index

    return build_onegen_index(entity_passages(summaries), out, model, name=name, progress=progress, role="entity")


def load_linker(model: str | os.PathLike | None = None, index: str | os.PathLike | None = None,
                progress: bool = True, candidates: int = 5, threshold: float | None | str = "model",
                ) -> tuple[EntityLinker, Path]:
    """``(EntityLinker, model folder)``: the OneGen model (default: the trained default, else the
    packaged adapter) over an entity index folder (default: its own index of the Wikipedia
    articles, built once into the cache). ``threshold``: ``"model"`` = the one tuned into the
    model folder (:data:`LINKING_FILE`), a number, or ``None`` for none."""
    from unirag.onegen.docindex import ensure_onegen_index, model_name, open_onegen_index, resolve_onegen_dir
    from unirag.onegen.model import OneGenModel

    folder = resolve_onegen_dir(model)
    og = OneGenModel.from_pretrained(folder, merge=True)
    if index is None:
        path = ensure_onegen_index(og, folder, role="entity", progress=progress)
        retriever = open_onegen_index(path, og, model_name=model_name(folder) + "#entity", role="entity")
    else:
        retriever = open_onegen_index(index, og, role="entity")
    t = read_threshold(folder) if threshold == "model" else threshold
    return EntityLinker(og, retriever, candidates=candidates, threshold=t), folder


# --- inference ---------------------------------------------------------------------------------
class EntityLinker:
    """``link(texts)``: the model copies each text marking mentions; every mention token's vector
    is searched in the entity index (nothing is inserted: linking costs no extra forward).
    ``threshold``: a mention whose best entity scores below it links to no entity of the
    knowledge base (NIL) and is dropped; ``None`` keeps every mention."""

    def __init__(self, model: Any, index: Any, candidates: int = 5, max_mentions: int = 64,
                 threshold: float | None = None):
        from unirag.models.decoding import EngineModel, Decoder

        self.threshold = threshold

        em = EngineModel.wrap(model)
        mention = model.token_id("mention") if hasattr(model, "token_id") else em.query_token_id
        self.model, self.em = model, dataclasses.replace(em, query_token_id=int(mention))
        self.engine = Decoder(self.em, index)
        self.candidates, self.max_mentions = candidates, max_mentions

    def prompt(self, text: str) -> str:
        """The chat prompt asking to link ``text``."""
        from unirag.onegen.qa import qa_prompt

        return qa_prompt(self.model, INSTRUCTION + text)

    def params(self, texts: Sequence[str]):
        """Greedy decoding with a budget of the longest text plus room for the markers."""
        from unirag.models.decoding import SamplingParams

        n = max(len(self.em.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return SamplingParams(max_new_tokens=int(n * 1.6) + 16, k=0, candidates=self.candidates,
                              max_retrievals=self.max_mentions)

    def link(self, texts: Sequence[str], batch_size: int = 8) -> list[list[LinkedSpan]]:
        """Linked spans for each text."""
        out: list[list[LinkedSpan]] = []
        for s in range(0, len(texts), batch_size):
            chunk = list(texts[s : s + batch_size])
            prompts = [self.prompt(t) for t in chunk]
            for text, o in zip(chunk, self.engine.generate(prompts, self.params(chunk))):
                out.append(keep_above(parse_links(text, o, self.em.tokenizer), self.threshold))
        return out


def keep_above(spans: list[LinkedSpan], threshold: float | None) -> list[LinkedSpan]:
    """The spans whose best entity scores at least ``threshold`` (all when ``None``)."""
    return list(spans) if threshold is None else [s for s in spans if s.score >= threshold]


def best_threshold(predicted: Sequence[Sequence[LinkedSpan]], gold: Sequence[Sequence[Mention]]) -> tuple[float | None, float]:
    """The NIL threshold that maximises strict micro F1 of ``predicted`` (spans linked without a
    threshold) against ``gold``, and that F1; ``None`` when no threshold beats keeping every span.
    Candidates are the predicted scores themselves (the lowest of equally good ones wins)."""
    best_t, best_f = None, linking_scores(predicted, gold)["f1"]
    for t in sorted({s.score for doc in predicted for s in doc}):
        f = linking_scores([keep_above(doc, t) for doc in predicted], gold)["f1"]
        if f > best_f:
            best_t, best_f = t, f
    return best_t, best_f


def check_tunable(model_dir: str | os.PathLike) -> None:
    """Raise ``ConfigError`` when ``model_dir`` is the packaged adapter: its threshold is shipped
    with it and the package is never written to."""
    from unirag.config.base import ConfigError
    from unirag.onegen.model import is_packaged_adapter

    if is_packaged_adapter(model_dir):
        raise ConfigError(f"{model_dir} is the packaged adapter, shipped with its tuned threshold: "
                          "tune a trained model folder of your own")


def tune_threshold(linker: EntityLinker, model_dir: str | os.PathLike, train_file: str | os.PathLike,
                   dev_docs: int = 120, batch_size: int = 8) -> dict[str, Any]:
    """Fit the NIL threshold on ``dev_docs`` development documents (training-split documents whose
    ``el:<title>`` id is not in ``train_file``), with ``linker`` linking every mention, and save it
    into ``model_dir`` (:func:`write_threshold`); returns what was saved. The packaged adapter
    (shipped with its threshold) is refused with a ``ConfigError`` before any work."""
    from unirag.corpus.jsonl import iter_jsonl

    check_tunable(model_dir)

    seen = {row.get("id", "") for _, row in iter_jsonl(train_file)}
    dev = dev_linking_docs(seen, dev_docs)
    gold = [g for _, g in dev]
    pred = linker.link([t for t, _ in dev], batch_size=batch_size)
    t, f1 = best_threshold(pred, gold)
    facts = {"dev_docs": len(dev), "dev_f1": f1, "dev_f1_without_threshold": linking_scores(pred, gold)["f1"]}
    write_threshold(model_dir, t, **facts)
    return {"threshold": t, **facts}


def read_threshold(model_dir: str | os.PathLike) -> float | None:
    """The tuned NIL threshold saved in a model folder (``None`` when not tuned)."""
    import json

    path = Path(model_dir) / LINKING_FILE
    return json.loads(path.read_text()).get("threshold") if path.is_file() else None


def write_threshold(model_dir: str | os.PathLike, threshold: float | None, **facts: Any) -> Path:
    """Save a tuned NIL threshold (and how it was chosen) into a model folder, atomically."""
    import json

    from unirag.config.base import atomic_write_text

    path = Path(model_dir) / LINKING_FILE
    atomic_write_text(path, json.dumps({"threshold": threshold, **facts}, indent=2) + "\n")
    return path


def parse_links(text: str, output: Any, tokenizer: Any) -> list[LinkedSpan]:
    """Spans of an engine :class:`~unirag.models.decoding.Output`: the surface of each mention token
    is the generated text since the last :data:`MENTION_OPEN`; it is aligned to ``text`` left to right."""
    spans, cursor = [], 0
    for r in output.trace:
        before = tokenizer.decode(output.token_ids[: r.step], skip_special_tokens=True)
        at = before.rfind(MENTION_OPEN)
        surface = (before[at + len(MENTION_OPEN):] if at >= 0 else before.split("\n")[-1][-40:]).strip()
        start = text.find(surface, cursor) if surface else -1
        if start < 0 and surface:
            start = text.find(surface)
        end = start + len(surface) if start >= 0 else -1
        if start >= 0:
            cursor = end
        if not r.ids:
            continue
        spans.append(LinkedSpan(start, end, surface, r.ids[0], float(r.scores[0]),
                                list(zip(r.ids[1:], [float(x) for x in r.scores[1:]]))))
    return spans


def linking_scores(predicted: Sequence[Sequence[LinkedSpan]], gold: Sequence[Sequence[Mention]]) -> dict[str, float]:
    """Micro precision / recall / F1 (in percent) of ``(start, end, entity)`` triples, the same for
    spans alone (mention detection), and disambiguation accuracy on correctly detected spans."""
    tp = n_pred = n_gold = span_tp = right = 0
    for pred, g in zip(predicted, gold):
        gold_set = {(m.start, m.end, m.entity) for m in g}
        gold_spans = {(m.start, m.end): m.entity for m in g}
        pred_set = {(p.start, p.end, p.entity) for p in pred if p.start >= 0}
        n_pred += len(pred)
        n_gold += len(gold_set)
        tp += len(pred_set & gold_set)
        for p in {(p.start, p.end): p.entity for p in pred if p.start >= 0}.items():
            if p[0] in gold_spans:
                span_tp += 1
                right += int(gold_spans[p[0]] == p[1])

    def prf(hit: int) -> tuple[float, float, float]:
        pr, rc = hit / n_pred if n_pred else 0.0, hit / n_gold if n_gold else 0.0
        return 100 * pr, 100 * rc, (200 * pr * rc / (pr + rc) if pr + rc else 0.0)

    p, r, f = prf(tp)
    sp, sr, sf = prf(span_tp)
    return {"precision": p, "recall": r, "f1": f, "mention_precision": sp, "mention_recall": sr,
            "mention_f1": sf, "disambiguation_accuracy": 100 * right / span_tp if span_tp else 0.0,
            "n_docs": float(len(gold)), "n_gold": float(n_gold), "n_pred": float(n_pred)}


def dev_linking_docs(exclude_ids: set[str], limit: int | None = 120, seed: int = 0,
                     ) -> list[tuple[str, list[Mention]]]:
    """``(text, gold mentions)`` of training-split documents that are not in ``exclude_ids``
    (the ``el:<title>`` ids of a training file): a development set for tuning, apart from both the
    training examples and the held-out documents; seeded order, the first ``limit``."""
    import random

    from unirag.data import wiki_summaries

    rows = [r for r in linking_examples(wiki_summaries(), split="train") if r["id"] not in exclude_ids]
    random.Random(seed).shuffle(rows)
    docs = [(r["text"], [Mention(**m) for m in r["mentions"]]) for r in rows]
    return docs[:limit] if limit else docs


def heldout_linking_docs(limit: int | None = None, heldout_fraction: float = 0.1,
                         ) -> list[tuple[str, list[Mention]]]:
    """Held-out ``(text, gold mentions)`` pairs built by the same rules as the training data."""
    from unirag.data import wiki_summaries

    rows = linking_examples(wiki_summaries(), split="heldout", heldout_fraction=heldout_fraction)
    docs = [(r["text"], [Mention(**m) for m in r["mentions"]]) for r in rows]
    return docs[:limit] if limit else docs

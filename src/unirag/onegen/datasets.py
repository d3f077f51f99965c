"""Build OneGen training data from the packaged data (:class:`OneGenDataConfig` says how).

* Multi-hop (FanOutQA dev × Wikipedia summaries): the user asks the top-level question; the
  assistant writes, per hop, a leaf sub-question, the query token, a passage (``title. text``,
  first ``passage_words`` words) between the passage markers, and the leaf answer; the last example
  of a question ends with ``Answer: <top-level answer>``. Leaves whose evidence page is a corpus
  passage retrieve that page (supervised: it is the positive). With ``fill_hops``, leaves whose
  page is not in the corpus fill each example up to ``max_hops`` hops: the passage inserted after
  their query token is BM25's top hit for the sub-question (what a retriever would return) and the
  retrieval has no positive (the LM loss teaches the model to keep asking; no contrastive term).
  The split is ``fanoutqa_split()`` (by top-level question).
* Single-hop (Wikidata short descriptions): for passages whose description is unique in the corpus,
  a templated question from the description ("Which subject is described as 'Type of fruit
  tree, or its fruit'?"); the assistant writes the query token, the passage, and the title.
* Single-hop (FanOutQA sub-questions, ``leaves``): each training-split sub-question whose evidence
  page is a corpus passage, answered as query token, passage, leaf answer.
* Single-hop reading (``reading`` > 0, :func:`reading_examples`): questions whose answer the
  inserted passage itself states, from patterns of Wikipedia lead sentences.
* Entity linking (``linking`` > 0): that many training documents of
  :func:`unirag.onegen.linking.linking_examples` (held-out documents never), their entity ids
  prefixed with :data:`ENTITY_PREFIX` so entity texts (``title. description. summary``) sit in the
  same ``docs.jsonl`` as the QA passages.

No QA training example retrieves, inserts or asks anything of a held-out question:
:func:`leak_report` checks it and :func:`build_onegen_data` refuses to write data that fails.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unirag.config.base import ConfigBase
from unirag.corpus import Passage
from unirag.data.fanoutqa import FanOutLeaf, FanOutQuestion, fanoutqa_split
from unirag.data.qa import answer_in_text
from unirag.data.wiki import wiki_passages
from unirag.models.decoding import cut_words
from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import OneGenExample, Retrieval
from unirag.onegen.reading import PATTERNS, reading_pairs


@dataclass
class OneGenDataConfig(ConfigBase):
    """How the packaged OneGen training set is built (the defaults are the recipe's).

    ``passage_words`` (``None`` = the model config's ``passage_words``, which inference uses too)
    cuts every inserted passage; ``descriptions`` single-hop examples from Wikidata descriptions
    (they end with the passage title); ``leaves`` adds the FanOutQA training sub-questions as
    answer-ending single-hop examples; ``max_hops`` sub-questions per multi-hop example;
    ``fill_hops`` adds leaves whose evidence page is outside the corpus (BM25 passage, no
    positive); ``max_answer_items`` caps a leaf answer list (``...`` marks the cut); ``linking``
    entity-linking documents; ``negatives`` BM25 hard negatives per supervised retrieval;
    ``answer_loss`` ``"all"`` trains every FanOutQA answer written after a passage, ``"supported"``
    only those whose inserted passage holds them (the others keep their retrieval and carry no LM
    loss; docs/onegen.md measures what that does); ``reading`` single-hop examples whose answer
    the inserted passage states (:mod:`unirag.onegen.reading`).
    """

    passage_words: int | None = None
    descriptions: int = 150
    leaves: bool = True
    max_hops: int = 4
    fill_hops: bool = True
    max_answer_items: int = 5
    linking: int = 1000
    negatives: int = 3
    seed: int = 0
    answer_loss: str = "all"
    reading: int = 0

    def __post_init__(self) -> None:
        if self.answer_loss not in ("all", "supported"):
            raise ValueError(f"OneGenDataConfig.answer_loss must be 'all' or 'supported', got {self.answer_loss!r}")
        for name in ("descriptions", "linking", "negatives", "reading"):
            if getattr(self, name) < 0:
                raise ValueError(f"OneGenDataConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_hops < 1 or self.max_answer_items < 1 or (self.passage_words is not None and self.passage_words < 1):
            raise ValueError("OneGenDataConfig: max_hops, max_answer_items and passage_words must be >= 1")


# The first packaged set (300-step adapter of the first release): short passages, at most two hops,
# only corpus-present leaves, 400 title-ending description examples, 500 linking documents.
FIRST_RELEASE_DATA = OneGenDataConfig(passage_words=32, descriptions=400, leaves=True, max_hops=2, fill_hops=False,
                                      max_answer_items=1000, linking=500)

ENTITY_PREFIX = "entity:"

TEMPLATES = (
    "Which subject is described as \"{d}\"?",
    "What is the {t} topic whose short description is \"{d}\"?",
    "Name the thing described as: {d}.",
    "Find the article about this: {d}.",
)


def passage_span(p: Passage, config: OneGenConfig, words: int | None) -> str:
    """``passage_start + "title. text" + passage_end`` with the text cut to ``words`` words, exactly as
    inference cuts an inserted passage (:func:`unirag.models.decoding.cut_words`)."""
    return f"{config.passage_start}{cut_words(p.contents, words)}{config.passage_end}"


def answer_text(leaf: FanOutLeaf, max_items: int = 5) -> str:
    """A leaf's answer as written in training text: the items joined by commas, at most ``max_items``."""
    items = leaf.answers
    return ", ".join(items[:max_items]) + (", ..." if len(items) > max_items else "")


def supported(leaf: FanOutLeaf, passage: Passage, words: int | None,
              max_items: int = 5) -> bool:
    """Whether the passage as inserted (cut to ``words``) holds every answer item the leaf's training
    text writes (normalised containment, as EM normalises)."""
    text = cut_words(passage.contents, words)
    return all(answer_in_text(text, item) for item in leaf.answers[:max_items])


def hop_groups(q: FanOutQuestion, corpus: dict[str, Passage], max_hops: int, fill: bool,
               exclude: Callable[[FanOutLeaf], bool] | None = None) -> list[list[FanOutLeaf]]:
    """The leaves of ``q`` grouped into examples of at most ``max_hops`` hops, in decomposition order:
    groups of corpus-present leaves, each filled (with ``fill``) with not yet used leaves whose page
    is outside the corpus; with ``fill`` a question without corpus leaves still gives one group.
    Leaves for which ``exclude`` is true are left out."""
    kept = [lf for lf in q.leaves if not (exclude and exclude(lf))]
    present = [lf for lf in kept if lf.evidence_title in corpus]
    absent = [lf for lf in kept if lf.evidence_title not in corpus] if fill else []
    groups = [present[i : i + max_hops] for i in range(0, len(present), max_hops)] or ([[]] if absent else [])
    order = {lf.id: i for i, lf in enumerate(q.leaves)}
    for g in groups:
        while len(g) < max_hops and absent:
            g.append(absent.pop(0))
        g.sort(key=lambda lf: order[lf.id])
    return [g for g in groups if g]


def fanoutqa_examples(questions: list[FanOutQuestion], corpus: dict[str, Passage], config: OneGenConfig,
                      passage_words: int | None = 48, max_hops: int = 4, fill: bool = False,
                      fill_passages: dict[str, str] | None = None, max_answer_items: int = 1000,
                      exclude: Callable[[FanOutLeaf], bool] | None = None,
                      supported_only: bool = False) -> list[OneGenExample]:
    """Multi-hop examples (see the module docstring). ``fill_passages`` maps the id of each leaf
    outside the corpus to the passage id inserted for it (required with ``fill``); leaves for
    which ``exclude`` is true are left out; with ``supported_only`` a hop answer carries LM loss
    only where its passage holds it."""
    q_tok = config.token("query")
    out = []
    for q in questions:
        groups = hop_groups(q, corpus, max_hops, fill, exclude)
        for c, group in enumerate(groups):
            parts, rets = [], []
            for leaf in group:
                supervised = leaf.evidence_title in corpus
                pid = leaf.evidence_title if supervised else (fill_passages or {})[leaf.id]
                parts.append(f"{leaf.question}{q_tok}{passage_span(corpus[pid], config, passage_words)}"
                             f"{answer_text(leaf, max_answer_items)}\n")
                loss = not supported_only or supported(leaf, corpus[pid], passage_words, max_answer_items)
                rets.append(Retrieval([pid] if supervised else [], answer_loss=loss))
            final = ", ".join(q.answers)
            if c == len(groups) - 1 and len(final) <= 100:
                parts.append(f"Answer: {final}")
            out.append(OneGenExample(
                messages=[{"role": "user", "content": q.question},
                          {"role": "assistant", "content": "".join(parts).strip()}],
                retrievals=rets, id=f"{q.id}#{c}",
            ))
    return out


def fill_passages_bm25(questions: list[FanOutQuestion], corpus: dict[str, Passage], exclude: set[str]) -> dict[str, str]:
    """For every leaf whose evidence page is outside the corpus: the id of BM25's top passage for the
    sub-question, never one in ``exclude`` (held-out evidence)."""
    from unirag.retrieval.bm25 import rank_texts

    leaves = [lf for q in questions for lf in q.leaves if lf.evidence_title not in corpus]
    ids = [pid for pid in corpus if pid not in exclude]
    ranked = rank_texts([corpus[i].contents for i in ids], [lf.question for lf in leaves], depth=1) if leaves else []
    rng = random.Random(0)
    return {lf.id: ids[r[0]] if r else ids[rng.randrange(len(ids))] for lf, r in zip(leaves, ranked)}


def leaf_examples(questions: list[FanOutQuestion], corpus: dict[str, Passage], config: OneGenConfig,
                  passage_words: int | None = 48, exclude: set[str] = frozenset(),
                  max_answer_items: int = 1000, supported_only: bool = False) -> list[OneGenExample]:
    """Single-hop examples from FanOutQA sub-questions: the user asks the sub-question; the assistant
    writes the query token, the evidence passage and the answer. Evidence titles in ``exclude`` are
    skipped; with ``supported_only`` the answer carries LM loss only where the passage holds it."""
    q_tok = config.token("query")
    return [OneGenExample(
        messages=[{"role": "user", "content": leaf.question},
                  {"role": "assistant", "content": f"{q_tok}{passage_span(corpus[leaf.evidence_title], config, passage_words)}"
                                                   f"{answer_text(leaf, max_answer_items)}"}],
        retrievals=[Retrieval([leaf.evidence_title], answer_loss=not supported_only or supported(
            leaf, corpus[leaf.evidence_title], passage_words, max_answer_items))], id=f"leaf:{leaf.id}")
        for q in questions for leaf in q.leaves
        if leaf.evidence_title in corpus and leaf.evidence_title not in exclude]


def description_examples(passages: list[Passage], config: OneGenConfig, exclude: set[str] = frozenset(),
                         limit: int | None = None, passage_words: int | None = 48, seed: int = 0) -> list[OneGenExample]:
    """Single-hop examples from unique Wikidata short descriptions (see the module docstring)."""
    counts = Counter(p.meta.get("description", "").strip().lower() for p in passages)
    usable = [p for p in passages if p.id not in exclude and (d := p.meta.get("description", "").strip())
              and counts[d.lower()] == 1 and len(d.split()) >= 3]
    rng = random.Random(seed)
    rng.shuffle(usable)
    usable = usable[:limit] if limit is not None else usable
    q_tok = config.token("query")
    out = []
    for i, p in enumerate(usable):
        d = p.meta["description"].strip()
        question = TEMPLATES[i % len(TEMPLATES)].format(d=d, t=(p.meta.get("topic") or "Wikipedia").lower())
        out.append(OneGenExample(
            messages=[{"role": "user", "content": question},
                      {"role": "assistant", "content": f"{q_tok}{passage_span(p, config, passage_words)}{p.title}"}],
            retrievals=[Retrieval([p.id])],
            id=f"desc:{p.id}",
        ))
    return out


def reading_examples(passages: list[Passage], config: OneGenConfig, exclude: set[str] = frozenset(),
                     limit: int | None = None, passage_words: int | None = 48, seed: int = 0) -> list[OneGenExample]:
    """Single-hop examples from :func:`unirag.onegen.reading.reading_pairs`: the user asks the
    question, the assistant writes the query token, the passage (retrieval positive) and the
    answer. Passages whose id is in
    ``exclude`` (held-out evidence) give none; at most one example per passage (the first pattern
    that holds); the patterns take turns (each one's examples in a seeded order), so ``limit``
    spreads over every pattern rather than over the commonest (nationalities)."""
    q_tok = config.token("query")
    groups: dict[str, list[OneGenExample]] = {pat.name: [] for pat in PATTERNS}
    for p in passages:
        if p.id in exclude:
            continue
        for name, question, answer in reading_pairs(p, passage_words):
            groups[name].append(OneGenExample(
                messages=[{"role": "user", "content": question},
                          {"role": "assistant", "content": f"{q_tok}{passage_span(p, config, passage_words)}{answer}"}],
                retrievals=[Retrieval([p.id])], id=f"read:{p.id}"))
            break
    rng = random.Random(seed)
    for g in groups.values():
        rng.shuffle(g)
    out = [g[i] for i in range(max(map(len, groups.values()), default=0)) for g in groups.values() if i < len(g)]
    return out[:limit] if limit is not None else out


def linking_training_examples(n: int, config: OneGenConfig, seed: int = 0,
                              exclude: set[str] = frozenset()) -> tuple[list[OneGenExample], dict]:
    """``n`` seeded entity-linking training examples (ids prefixed with :data:`ENTITY_PREFIX`) and
    the entity documents they need: prefixed id → (title, ``description. summary``). Documents whose
    title is in ``exclude`` are not drawn."""
    from unirag.data import wiki_summaries
    from unirag.onegen.linking import entity_passages, linking_examples

    summaries = wiki_summaries()
    rows = [r for r in linking_examples(summaries, mention_token=config.token("mention"), split="train")
            if r["id"].removeprefix("el:") not in exclude]
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    examples = [OneGenExample(id=r["id"], messages=r["messages"],
                              retrievals=[Retrieval([ENTITY_PREFIX + p for p in ret["positives"]], [], "mention")
                                          for ret in r["retrievals"]]) for r in rows]
    docs = {ENTITY_PREFIX + p.id: (p.title, p.text) for p in entity_passages(summaries)}
    return examples, docs


def leak_report(train: list[OneGenExample], held: list[FanOutQuestion], config: OneGenConfig) -> dict[str, int]:
    """What of the held-out questions reaches the QA training examples (all counts must be 0):
    held-out evidence pages as retrieval positives or inserted passages, held-out sub-question or
    top-level question texts in a message, and linking examples whose text is a held-out page. The
    entities a linking example links to may be held-out pages (the mention token against entity
    vectors, not the query token against document vectors): counted, not refused."""
    pages = {lf.evidence_title for q in held for lf in q.leaves}
    texts = {lf.question for q in held for lf in q.leaves} | {q.question for q in held}
    start, end = config.passage_start, config.passage_end
    out = {"positives": 0, "inserted": 0, "questions": 0, "linking_examples_of_heldout_pages": 0,
           "linking_mentions_of_heldout_pages": 0}
    for ex in train:
        if ex.retrievals and ex.retrievals[0].role == "mention":
            out["linking_examples_of_heldout_pages"] += ex.id.removeprefix("el:") in pages
            out["linking_mentions_of_heldout_pages"] += sum(p.removeprefix(ENTITY_PREFIX) in pages
                                                            for r in ex.retrievals for p in r.positives)
            continue
        out["positives"] += sum(p in pages for r in ex.retrievals for p in r.positives)
        body = " ".join(m["content"] for m in ex.messages)
        inserted = [seg.split(end)[0] for seg in body.split(start)[1:]]
        out["inserted"] += sum(any(seg.startswith(p + ". ") for p in pages) for seg in inserted)
        out["questions"] += sum(t in body for t in texts)
    return out


def data_figures(multi: list[OneGenExample], single: list[OneGenExample], config: OneGenConfig) -> dict[str, object]:
    """What the data teaches, in numbers: hops per multi-hop example, supervised and LM-only
    retrievals, and the share of single-hop examples whose reply after the passage is the passage
    title (the habit that makes a model answer with the title)."""
    end = config.passage_end

    def title_ending(ex: OneGenExample) -> bool:
        reply = ex.messages[-1]["content"]
        after = reply.rsplit(end, 1)[-1].strip()
        title = reply.split(config.passage_start, 1)[1].split(". ", 1)[0] if config.passage_start in reply else ""
        return bool(title) and after == title

    rets = [r for ex in multi + single for r in ex.retrievals]
    return {"hops_per_multihop_example": dict(sorted(Counter(len(ex.retrievals) for ex in multi).items())),
            "multihop_examples": len(multi),
            "query_retrievals_supervised": sum(bool(r.positives) for r in rets),
            "query_retrievals_lm_only": sum(not r.positives for r in rets),
            "single_hop_examples": len(single),
            "single_hop_title_ending_share": round(sum(map(title_ending, single)) / max(1, len(single)), 3)}


def build_onegen_data(out: str | Path, data: OneGenDataConfig | None = None, config: OneGenConfig | None = None) -> dict:
    """Write ``train.jsonl``, ``heldout.jsonl`` (the held-out FanOutQA questions, built the same way),
    ``docs.jsonl`` (the 10,033 passages, plus the entity texts when ``data.linking``) and
    ``data_summary.json`` (counts, :func:`data_figures`, :func:`leak_report`) into folder ``out``.
    Raises ``ValueError`` before writing anything if a held-out question leaks into the QA examples."""
    from unirag.onegen.data import write_documents, write_examples
    from unirag.onegen.mining import mine_bm25_negatives

    data = data or OneGenDataConfig()
    config = config or OneGenConfig()
    words = data.passage_words if data.passage_words is not None else config.passage_words
    out = Path(out)
    passages = wiki_passages()
    corpus = {p.id: p for p in passages}
    train_q, held_q = fanoutqa_split()
    held_titles = {leaf.evidence_title for q in held_q for leaf in q.leaves}
    held_texts = {leaf.question for q in held_q for leaf in q.leaves}

    def leaks(leaf: FanOutLeaf) -> bool:  # a training leaf that shares a page or a text with the held-out set
        return leaf.evidence_title in held_titles or leaf.question in held_texts

    fill = fill_passages_bm25(train_q + held_q, corpus, held_titles) if data.fill_hops else {}
    only = data.answer_loss == "supported"
    multi = fanoutqa_examples(train_q, corpus, config, words, data.max_hops, data.fill_hops, fill,
                              data.max_answer_items, exclude=leaks, supported_only=only)
    single = description_examples(passages, config, exclude=held_titles, limit=data.descriptions,
                                  passage_words=words, seed=data.seed)
    held = fanoutqa_examples(held_q, corpus, config, words, data.max_hops, data.fill_hops, fill,
                             data.max_answer_items)
    leaf = [ex for ex in leaf_examples(train_q, corpus, config, words, held_titles, data.max_answer_items, only)
            if ex.messages[0]["content"] not in held_texts] if data.leaves else []
    read = [ex for ex in reading_examples(passages, config, held_titles, data.reading, words, data.seed)
            if ex.messages[0]["content"] not in held_texts] if data.reading else []
    train = multi + single + leaf + read
    random.Random(data.seed).shuffle(train)
    docs = {p.id: p.contents for p in passages}
    if data.negatives:
        mine_bm25_negatives(train, docs, k=data.negatives, config=config)
        mine_bm25_negatives(held, docs, k=data.negatives, config=config)
    doc_rows = {p.id: (p.title, p.text) for p in passages}
    linked: list[OneGenExample] = []
    if data.linking:
        linked, entity_docs = linking_training_examples(data.linking, config, data.seed, exclude=held_titles)
        doc_rows.update(entity_docs)
        train = train + linked
        random.Random(data.seed + 1).shuffle(train)
    leaks = leak_report(train, held_q, config)
    if any(v for k, v in leaks.items() if k != "linking_mentions_of_heldout_pages"):
        raise ValueError(f"held-out FanOutQA questions leak into the QA training examples: {leaks}")
    write_documents(doc_rows, out / "docs.jsonl")
    counts = {"train": write_examples(train, out / "train.jsonl"), "train_multihop": len(multi),
              "train_linking": len(linked), "train_leaves": len(leaf),
              "train_single_hop": len(single), "train_reading": len(read), "heldout": write_examples(held, out / "heldout.jsonl"),
              "train_retrievals": sum(len(e.retrievals) for e in train),
              "heldout_retrievals": sum(len(e.retrievals) for e in held),
              "train_answers_without_loss": sum(not r.answer_loss for e in train for r in e.retrievals),
              "train_leaves_with_answer_loss": sum(ex.retrievals[0].answer_loss for ex in leaf),
              "documents": len(doc_rows),
              "passage_words": words}
    summary = {"data": data.to_dict(), "counts": counts, "figures": data_figures(multi, single + leaf + read, config), "leaks": leaks}
    (out / "data_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

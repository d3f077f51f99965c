"""Build OneGen training data from the packaged data.

* Multi-hop (FanOutQA dev × Wikipedia summaries): one example per top-level question (split into
  chunks of at most ``max_leaves`` leaves). The user asks the top-level question; the assistant
  writes, for each leaf whose evidence page is a corpus passage, the leaf sub-question, the query
  token, the evidence passage (``title. text``, first ``passage_words`` words) between the passage
  markers, and the leaf answer. The split is ``fanoutqa_split()`` (by top-level question).
* Single-hop (Wikidata short descriptions): for passages whose description is unique in the corpus,
  a templated question from the description ("Which subject is described as 'Type of fruit
  tree, or its fruit'?"); the assistant writes the query token, the passage, and the title.
  Passages that are the evidence of any held-out FanOutQA leaf are left out.
* Single-hop (FanOutQA sub-questions, optional ``leaves``): each training-split sub-question whose
  evidence page is a corpus passage and no held-out leaf's evidence, answered as query token, passage, leaf answer.
* Entity linking (optional, ``linking`` > 0): that many training documents of
  :func:`unirag.onegen.linking.linking_examples` (held-out documents never), their entity ids
  prefixed with :data:`ENTITY_PREFIX` so entity texts (``title. description. summary``) sit in the
  same ``docs.jsonl`` as the QA passages.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from unirag.corpus import Passage
from unirag.data.fanoutqa import FanOutQuestion, fanoutqa_split
from unirag.data.wiki import wiki_passages
from unirag.onegen.config import OneGenConfig
from unirag.onegen.data import OneGenExample, Retrieval

ENTITY_PREFIX = "entity:"

TEMPLATES = (
    "Which subject is described as \"{d}\"?",
    "What is the {t} topic whose short description is \"{d}\"?",
    "Name the thing described as: {d}.",
    "Find the article about this: {d}.",
)


def truncate_words(text: str, words: int) -> str:
    """The first ``words`` words of ``text`` (with an ellipsis when cut)."""
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + " ..."


def passage_span(p: Passage, config: OneGenConfig, words: int) -> str:
    """``passage_start + "title. text" + passage_end`` with the text cut to ``words`` words."""
    return f"{config.passage_start}{truncate_words(p.contents, words)}{config.passage_end}"


def fanoutqa_examples(questions: list[FanOutQuestion], corpus: dict[str, Passage], config: OneGenConfig,
                      passage_words: int = 48, max_leaves: int = 3) -> list[OneGenExample]:
    """Multi-hop examples (see the module docstring); questions without a usable leaf are skipped."""
    q_tok = config.token("query")
    out = []
    for q in questions:
        leaves = [leaf for leaf in q.leaves if leaf.evidence_title in corpus]
        for c in range(0, len(leaves), max_leaves):
            chunk = leaves[c : c + max_leaves]
            parts = []
            for leaf in chunk:
                answer = ", ".join(leaf.answers)
                parts.append(f"{leaf.question}{q_tok}{passage_span(corpus[leaf.evidence_title], config, passage_words)}"
                             f"{answer}\n")
            final = ", ".join(q.answers)
            if c + max_leaves >= len(leaves) and len(final) <= 100:
                parts.append(f"Answer: {final}")
            out.append(OneGenExample(
                messages=[{"role": "user", "content": q.question},
                          {"role": "assistant", "content": "".join(parts).strip()}],
                retrievals=[Retrieval([leaf.evidence_title]) for leaf in chunk],
                id=f"{q.id}#{c // max_leaves}",
            ))
    return out


def leaf_examples(questions: list[FanOutQuestion], corpus: dict[str, Passage], config: OneGenConfig,
                  passage_words: int = 48, exclude: set[str] = frozenset()) -> list[OneGenExample]:
    """Single-hop examples from FanOutQA sub-questions: the user asks the sub-question; the assistant
    writes the query token, the evidence passage and the answer. Evidence titles in ``exclude`` are
    skipped."""
    q_tok = config.token("query")
    return [OneGenExample(
        messages=[{"role": "user", "content": leaf.question},
                  {"role": "assistant", "content": f"{q_tok}{passage_span(corpus[leaf.evidence_title], config, passage_words)}"
                                                   f"{', '.join(leaf.answers)}"}],
        retrievals=[Retrieval([leaf.evidence_title])], id=f"leaf:{leaf.id}")
        for q in questions for leaf in q.leaves
        if leaf.evidence_title in corpus and leaf.evidence_title not in exclude]


def description_examples(passages: list[Passage], config: OneGenConfig, exclude: set[str] = frozenset(),
                         limit: int | None = None, passage_words: int = 48, seed: int = 0) -> list[OneGenExample]:
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


def linking_training_examples(n: int, config: OneGenConfig, seed: int = 0) -> tuple[list[OneGenExample], dict]:
    """``n`` seeded entity-linking training examples (ids prefixed with :data:`ENTITY_PREFIX`) and
    the entity documents they need: prefixed id → (title, ``description. summary``)."""
    from unirag.data import wiki_summaries
    from unirag.onegen.linking import entity_passages, linking_examples

    summaries = wiki_summaries()
    rows = linking_examples(summaries, mention_token=config.token("mention"), split="train")
    rows = random.Random(seed).sample(rows, min(n, len(rows)))
    examples = [OneGenExample(id=r["id"], messages=r["messages"],
                              retrievals=[Retrieval([ENTITY_PREFIX + p for p in ret["positives"]], [], "mention")
                                          for ret in r["retrievals"]]) for r in rows]
    docs = {ENTITY_PREFIX + p.id: (p.title, p.text) for p in entity_passages(summaries)}
    return examples, docs


def build_onegen_data(out: str | Path, config: OneGenConfig | None = None, n_descriptions: int = 400,
                      passage_words: int = 48, max_leaves: int = 3, negatives: int = 3, seed: int = 0,
                      linking: int = 0, leaves: bool = False) -> dict:
    """Write ``train.jsonl`` (FanOutQA train questions + description examples (+ sub-question
    examples when ``leaves``) + ``linking``
    entity-linking examples), ``heldout.jsonl`` (FanOutQA held-out questions) and ``docs.jsonl``
    (the 10,033 passages, plus the entity texts when ``linking``) into folder ``out``, with BM25
    hard negatives for the QA retrievals. Returns counts."""
    from unirag.onegen.data import write_documents, write_examples
    from unirag.onegen.mining import mine_bm25_negatives

    config = config or OneGenConfig()
    out = Path(out)
    passages = wiki_passages()
    corpus = {p.id: p for p in passages}
    train_q, held_q = fanoutqa_split()
    held_titles = {leaf.evidence_title for q in held_q for leaf in q.leaves}
    multi = fanoutqa_examples(train_q, corpus, config, passage_words, max_leaves)
    single = description_examples(passages, config, exclude=held_titles, limit=n_descriptions,
                                  passage_words=passage_words, seed=seed)
    held = fanoutqa_examples(held_q, corpus, config, passage_words, max_leaves)
    leaf = leaf_examples(train_q, corpus, config, passage_words, held_titles) if leaves else []
    train = multi + single + leaf
    random.Random(seed).shuffle(train)
    docs = {p.id: p.contents for p in passages}
    if negatives:
        mine_bm25_negatives(train, docs, k=negatives, config=config)
        mine_bm25_negatives(held, docs, k=negatives, config=config)
    doc_rows = {p.id: (p.title, p.text) for p in passages}
    linked: list[OneGenExample] = []
    if linking:
        linked, entity_docs = linking_training_examples(linking, config, seed)
        doc_rows.update(entity_docs)
        train = train + linked
        random.Random(seed + 1).shuffle(train)
    write_documents(doc_rows, out / "docs.jsonl")
    counts = {"train": write_examples(train, out / "train.jsonl"), "train_multihop": len(multi),
              "train_linking": len(linked), "train_leaves": len(leaf),
              "train_single_hop": len(single), "heldout": write_examples(held, out / "heldout.jsonl"),
              "train_retrievals": sum(len(e.retrievals) for e in train),
              "heldout_retrievals": sum(len(e.retrievals) for e in held), "documents": len(doc_rows)}
    return counts

"""OneGen question answering beside its baselines, on the same questions and the same generator.

- ``onegen``: retrieval inside generation (:mod:`unirag.onegen.qa`), OneGen index of the corpus;
- ``pipeline``: retrieve-then-read, all-MiniLM-L6-v2 over the same corpus, top-k passages put in
  the prompt (:func:`unirag.pipeline.rag_pipeline.build_prompt`), the same LM reads;
- ``closed_book``: the same LM, no index (the query token is banned).
All three decode with the same engine and settings (greedy, same token budget).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unirag.onegen.engine import EngineModel, OneGenEngine, SamplingParams
from unirag.onegen.qa import (PASSAGE_WORDS, QAItem, QAResult, answer_questions, extract_answer, run_onegen_qa,
                              score)


def closed_book(model: Any, items: Sequence[QAItem], params: SamplingParams, batch_size: int = 8,
                progress: bool = False) -> tuple[dict[str, Any], list[QAResult]]:
    """The same model answering without any index."""
    pairs = answer_questions(OneGenEngine(model, None), model, [it.question for it in items], params,
                             batch_size, progress)
    results = [QAResult(it.id, it.question, ans, out.text, [], []) for it, (out, ans) in zip(items, pairs)]
    return score(items, [r.answer for r in results], None), results


def pipeline_baseline(model: Any, items: Sequence[QAItem], retriever: Any, params: SamplingParams, k: int = 3,
                      batch_size: int = 8, progress: bool = False) -> tuple[dict[str, Any], list[QAResult]]:
    """Retrieve-then-read: ``retriever`` (a :class:`unirag.retrieval.DenseRetriever`) finds ``k``
    passages per question, the prompt lists them, the same model answers in one pass."""
    from unirag.pipeline.rag_pipeline import SYSTEM, build_prompt

    em = EngineModel.wrap(model)
    hits = retriever.search([it.question for it in items], k)
    prompts, sources = [], []
    for i, it in enumerate(items):
        passages = hits.passages(i)
        sources.append([p.id for p in passages])
        user = build_prompt(it.question, passages)
        msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        prompts.append(em.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
                       if getattr(em.tokenizer, "chat_template", None) else f"{SYSTEM}\n\n{user}")
    engine = OneGenEngine(em, None)
    results: list[QAResult] = []
    for s in range(0, len(prompts), batch_size):
        for j, out in enumerate(engine.generate(prompts[s : s + batch_size], params)):
            it = items[s + j]
            results.append(QAResult(it.id, it.question, extract_answer(out.text), out.text, sources[s + j], []))
    return score(items, [r.answer for r in results], [[r.sources] for r in results]), results


def corpus_sample(items: Sequence[QAItem], size: int, seed: int = 0) -> list[Any]:
    """The evidence passages of ``items`` plus random other corpus passages, ``size`` in all
    (a smaller corpus where embedding all 10,033 passages with the LM is too slow)."""
    import random

    from unirag.data import wiki_passages

    passages = wiki_passages()
    gold = {e for it in items for e in it.evidence}
    keep = [p for p in passages if p.id in gold]
    rest = [p for p in passages if p.id not in gold]
    random.Random(seed).shuffle(rest)
    return keep + rest[: max(0, size - len(keep))]


def evaluate_qa(model_dir: str | os.PathLike | None = None, kind: str = "single", limit: int | None = None,
                systems: Sequence[str] = ("onegen", "pipeline", "closed_book"), index_dir: str | None = None,
                k: int = 1, max_retrievals: int = 4, max_new_tokens: int = 64, batch_size: int = 8,
                pipeline_k: int = 3, progress: bool = True, out_dir: str | os.PathLike | None = None,
                corpus_size: int | None = None, retrieve_first: bool = False,
                retrieve_prob: float | None = None) -> dict[str, Any]:
    """Run the held-out FanOutQA split (``kind`` ``single`` or ``multi``) through ``systems``
    against the whole corpus (or, with ``corpus_size``, the evidence pages plus random passages,
    ``corpus_size`` in all, for both retrievers); ``retrieve_first`` makes OneGen emit the query
    token as its first token (for a model that has not learned when to retrieve); ``retrieve_prob``
    emits it whenever its probability reaches that value (``SamplingParams.retrieve_prob``); returns metrics
    per system and writes predictions to ``out_dir``."""
    import json

    from unirag.onegen.docindex import OneGenIndex, ensure_onegen_index, model_name, resolve_onegen_dir
    from unirag.onegen.model import OneGenModel
    from unirag.onegen.qa import fanoutqa_items

    folder = resolve_onegen_dir(model_dir)
    model = OneGenModel.from_pretrained(folder, merge=True)
    items = fanoutqa_items(kind, "heldout", limit)
    params = SamplingParams(max_new_tokens=max_new_tokens, k=k, max_retrievals=max_retrievals,
                            max_passage_words=PASSAGE_WORDS, force_query_at=(0,) if retrieve_first else (),
                            retrieve_prob=retrieve_prob)
    report: dict[str, Any] = {"model": str(folder), "kind": kind, "n": len(items), "systems": {},
                              "retrieve_first": retrieve_first, "retrieve_prob": retrieve_prob, "pipeline_k": pipeline_k,
                              "corpus": f"sample of {corpus_size}" if corpus_size else "all 10,033 passages"}
    sample = corpus_sample(fanoutqa_items(kind, "heldout"), corpus_size) if corpus_size else None
    for system in systems:
        t = time.perf_counter()
        if system == "onegen":
            if sample is not None and not index_dir:
                from unirag.config.paths import cache_dir
                from unirag.onegen.docindex import build_onegen_index

                name = model_name(folder)
                index_dir = str(cache_dir() / "indexes" / f"onegen-document-{name.split('@')[-1]}-sample{corpus_size}")
                if not (Path(index_dir) / "manifest.json").is_file():
                    build_onegen_index(sample, index_dir, model, name=name, progress=progress)
            path = index_dir or ensure_onegen_index(model, folder, progress=progress)
            index = OneGenIndex.load(path, model_name=None if index_dir else model_name(folder))
            metrics, results = run_onegen_qa(OneGenEngine(model, index), model, items, params, batch_size, progress)
        elif system == "pipeline":
            from unirag.retrieval import DenseRetriever
            from unirag.retrieval.build import build_index, ensure_default_index

            if sample is not None:
                from unirag.config.paths import cache_dir

                mini = cache_dir() / "indexes" / f"wiki-minilm-heldout-sample{corpus_size}"
                if not (mini / "manifest.json").is_file():
                    build_index(sample, mini, bm25=False, progress=progress)
                retriever = DenseRetriever.load(mini)
            else:
                retriever = DenseRetriever.load(ensure_default_index(progress=progress))
            metrics, results = pipeline_baseline(model, items, retriever, params, pipeline_k, batch_size, progress)
        elif system == "closed_book":
            metrics, results = closed_book(model, items, params, batch_size, progress)
        else:
            raise ValueError(f"unknown system {system!r} (onegen, pipeline, closed_book)")
        metrics["seconds"] = time.perf_counter() - t
        report["systems"][system] = metrics
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(out_dir) / f"qa-{kind}-{system}.jsonl", "w", encoding="utf-8") as fh:
                for r in results:
                    fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return report

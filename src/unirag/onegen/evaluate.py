"""Held-out retrieval evaluation of a OneGen model over the packaged corpus.

The model's own query vectors (question in the user turn, the query token opening the assistant
turn) are searched against its document vectors of all 10,033 passages, saved as a unirag index
folder (FAISS ``Flat`` inner product + doc store; ``manifest.encoder`` names the model, as
``unirag.onegen.docindex`` does, so the inference engine reuses the folder). The same
held-out FanOutQA leaves are searched with the all-MiniLM-L6-v2 default index for comparison.

Run: ``python -m unirag.onegen.evaluate [--model DIR] [--index DIR] [--out runs/onegen/eval.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from unirag.config.paths import cache_dir


def default_index_dir(model_dir: str | Path | None = None) -> tuple[Path, str]:
    """``(folder, encoder name)`` of the corpus index for a OneGen model folder (default: the trained
    default): the folder and name the inference engine looks for, so each is built once."""
    from unirag.onegen.docindex import model_name, resolve_onegen_dir

    name = model_name(resolve_onegen_dir(model_dir))
    return cache_dir() / "indexes" / f"onegen-document-{name.split('@')[-1]}-wiki", name


def heldout_leaves() -> list[Any]:
    """The held-out FanOutQA leaves whose evidence page is a corpus passage (160)."""
    from unirag.data import fanoutqa_split, wiki_summaries

    titles = wiki_summaries()
    return [leaf for q in fanoutqa_split()[1] for leaf in q.leaves if leaf.evidence_title in titles]


def recall(ranked_ids: list[list[str]], gold: list[str], ks: tuple[int, ...] = (1, 5, 20)) -> dict[str, float]:
    """Fraction of queries whose gold id is in the top k, for each k."""
    return {f"recall@{k}": float(np.mean([g in r[:k] for r, g in zip(ranked_ids, gold)])) for k in ks}


def onegen_ranked(model: Any, index_dir: str | Path, questions: list[str], k: int = 20) -> list[list[str]]:
    """Top-``k`` ids for each question's query vector (``chat_prompt(q, query token)``)."""
    from unirag.corpus import DocStore
    from unirag.index import Index

    index = Index.load(index_dir)
    q = model.query_vectors([model.chat_prompt(x, model.config.token("query")) for x in questions])
    _, rows = index.search(q, k)
    store = DocStore(Path(index_dir) / "docs")
    try:
        return [store.ids(r) for r in rows]
    finally:
        store.close()


def onegen_recall(model: Any, index_dir: str | Path, questions: list[str], gold: list[str],
                  ks: tuple[int, ...] = (1, 5, 20)) -> dict[str, float]:
    """Recall of the model's query vectors (``chat_prompt(q, query token)``) against its index."""
    return recall(onegen_ranked(model, index_dir, questions, max(ks)), gold, ks)


def minilm_ranked(questions: list[str], k: int = 20) -> list[list[str]]:
    """Top-``k`` ids of all-MiniLM-L6-v2 over the default index."""
    from unirag.retrieval import ensure_default_index, load_retriever

    return load_retriever(ensure_default_index(), "dense").search(questions, k=k).ids


def training_positives(train_file: str | Path) -> set[str]:
    """Document ids that are a retrieval positive of some example in a OneGen training file
    (entity ids of linking examples excluded)."""
    import json

    from unirag.onegen.datasets import ENTITY_PREFIX

    out: set[str] = set()
    with open(train_file, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                for ret in json.loads(line).get("retrievals", []):
                    out.update(p for p in ret.get("positives", []) if not p.startswith(ENTITY_PREFIX))
    return out


def evaluate(model_dir: str | None = None, index_dir: str | None = None, rebuild: bool = False,
             batch_size: int = 32, train_file: str | None = None) -> dict[str, Any]:
    """Build (or reuse) the model's index, then held-out recall of the model and of MiniLM; with
    ``train_file``, also split by whether the gold page was a retrieval positive in training
    (the FanOutQA split is by top-level question, so held-out sub-questions can share pages with
    training ones)."""
    from unirag.data import wiki_passages
    from unirag.onegen.docindex import build_onegen_index
    from unirag.onegen.model import OneGenModel

    model = OneGenModel.from_pretrained(model_dir, merge=True)  # same vectors (tested), fewer matmuls
    folder, name = default_index_dir(model_dir)
    folder = Path(index_dir) if index_dir else folder
    if rebuild or not (folder / "manifest.json").is_file():
        build_onegen_index(wiki_passages(), folder, model, name=name, batch_size=batch_size)
    leaves = heldout_leaves()
    questions, gold = [leaf.question for leaf in leaves], [leaf.evidence_title for leaf in leaves]
    ranked = {"onegen": onegen_ranked(model, folder, questions), "all-minilm-l6-v2": minilm_ranked(questions)}
    out: dict[str, Any] = {"n_queries": len(leaves), "corpus": 10033, "index": str(folder)}
    out.update({name: recall(r, gold) for name, r in ranked.items()})
    if train_file:
        seen = training_positives(train_file)
        for label, keep in (("page_seen_in_training", True), ("page_unseen_in_training", False)):
            sel = [i for i, g in enumerate(gold) if (g in seen) == keep]
            out[label] = {"n": len(sel)} | {name: recall([r[i] for i in sel], [gold[i] for i in sel])
                                            for name, r in ranked.items()}
    return out


def main() -> None:
    """Command-line entry: print and save the evaluation JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="OneGen model folder (default: the trained default)")
    ap.add_argument("--index", default=None, help="index folder to build or reuse")
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-file", default=None,
                    help="OneGen training file: also report recall split by whether the page was a training positive")
    ap.add_argument("--out", default="runs/onegen/eval.json")
    a = ap.parse_args()
    res = evaluate(a.model, a.index, a.rebuild, a.batch_size, a.train_file)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

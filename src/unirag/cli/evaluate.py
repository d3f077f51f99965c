"""``unirag eval retrieval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import out, print_json, usage_error
from unirag.cli.groups import eval_app

SPLITS = ("all", "train", "heldout")


def parse_ks(text: str, option: str = "--ks") -> tuple[int, ...]:
    """``"1,5,10"`` -> ``(1, 5, 10)``; anything but positive integers is a usage error naming ``option``."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts:
        raise usage_error(option, "expected comma-separated positive integers, got nothing")
    try:
        ks = tuple(int(x) for x in parts)
    except ValueError:
        raise usage_error(option, f"expected comma-separated positive integers, got {text!r}") from None
    bad = [k for k in ks if k < 1]
    if bad:
        raise usage_error(option, f"cut-offs must be at least 1, got {bad[0]}")
    return ks


def parse_kinds(text: str, option: str = "--retriever") -> list[str]:
    """Comma-separated retriever kinds, each checked (a usage error naming ``option`` otherwise)."""
    from unirag.retrieval.loader import check_retriever_kind

    kinds = [x.strip() for x in text.split(",") if x.strip()]
    if not kinds:
        raise usage_error(option, "no retriever given (dense, bm25, hybrid, onegen)")
    return [k if k == "onegen" else check_retriever_kind(k, option) for k in kinds]


@eval_app.command("retrieval")
def eval_retrieval(
    queries: Optional[Path] = typer.Option(None, "--queries", "-q", help="JSONL of {id, question, gold: [passage ids]}; default: FanOutQA dev leaves joined with the Wikipedia corpus (558)."),
    split: str = typer.Option("all", help="With the built-in FanOutQA set: all, train or heldout."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Index folder (default: the built-in Wikipedia index)."),
    retrievers: str = typer.Option("dense,bm25,hybrid", "--retriever", "-r", help="Comma-separated: dense, bm25, hybrid, onegen (a OneGen model's own query vectors over its own index)."),
    model: Optional[str] = typer.Option(None, "--model", help="OneGen model folder for --retriever onegen (default: the trained default, else the packaged adapter)."),
    onegen_index: Optional[Path] = typer.Option(None, help="OneGen index folder (default: the model's own index of the Wikipedia corpus, built once)."),
    train_file: Optional[Path] = typer.Option(None, help="A OneGen training file: also report each retriever on the questions whose gold page was / was not a training positive."),
    ks: str = typer.Option("1,5,10,20", help="Cut-offs k for recall@k, MRR@k, nDCG@k."),
    output: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the results JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Recall@k, MRR@k and nDCG@k (via ir-measures) of each retriever on a set of questions."""
    from rich.table import Table

    from unirag.config.base import atomic_write_text
    from unirag.eval import evaluate_retrieval, fanoutqa_retrieval_queries, read_retrieval_queries
    from unirag.index.folder import IndexFolder
    from unirag.retrieval import ensure_default_index

    cut = parse_ks(ks)
    kinds = parse_kinds(retrievers)
    if split not in SPLITS:
        raise usage_error("--split", f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if queries is not None and not queries.is_file():
        raise usage_error("--queries", f"{queries}: no such file")
    if train_file is not None and not train_file.is_file():
        raise usage_error("--train-file", f"{train_file}: no such file")
    onegen_cfg = None
    if "onegen" in kinds:
        from unirag.api import LoadConfig

        onegen_cfg = LoadConfig("onegen", str(onegen_index) if onegen_index else None, model=model).validate()
    qs = read_retrieval_queries(queries) if queries else fanoutqa_retrieval_queries(split)
    folder = index if index is not None else ensure_default_index()
    layout = IndexFolder(folder)
    manifest = layout.read_manifest()
    for kind in kinds:  # every requested part present before the first retriever runs
        if kind != "onegen":
            layout.require(kind, manifest)
    subsets = {"all": qs}
    if train_file is not None:
        from unirag.onegen.data import training_positives

        seen = training_positives(train_file)
        subsets["page_seen_in_training"] = [q for q in qs if set(q.gold) & seen]
        subsets["page_unseen_in_training"] = [q for q in qs if not set(q.gold) & seen]
    results, split_results = {}, {name: {"n": len(sub)} for name, sub in subsets.items() if name != "all"}
    for kind in kinds:
        from unirag.api import RAG, LoadConfig

        if kind == "onegen":
            retriever = RAG.from_config(onegen_cfg, progress=not as_json).engine.retriever
        else:  # a search-only pipeline (no generator) over the folder
            retriever = RAG.from_config(LoadConfig("pipeline", str(folder), None, kind)).engine.retriever
        results[kind] = evaluate_retrieval(retriever, qs, ks=cut)
        for name, sub in subsets.items():
            if name != "all" and sub:
                split_results[name][kind] = evaluate_retrieval(retriever, sub, ks=cut)
    report = {"queries": str(queries) if queries else f"fanoutqa-dev-{split}", "index": str(folder), "results": results}
    if train_file is not None:
        report["by_training_positive"] = split_results
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, json.dumps(report, indent=2) + "\n")
    if as_json:
        print_json(report)
        return
    table = Table(title=f"retrieval on {report['queries']} ({len(qs)} questions)")
    table.add_column("retriever")
    kn = 10 if 10 in cut else max(cut)
    cols = [f"recall@{k}" for k in cut] + [f"mrr@{kn}", f"ndcg@{kn}"]
    for c in cols:
        table.add_column(c.replace("recall", "R").replace("mrr", "MRR").replace("ndcg", "nDCG"), justify="right")
    for kind, res in results.items():
        table.add_row(kind, *[f"{res[c]:.3f}" for c in cols])
    out.print(table)

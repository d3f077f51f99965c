"""OneGen's own verbs: ``unirag link``, ``unirag eval linking``, ``unirag index onegen``
(question answering goes through the door: ``unirag ask --engine onegen``, ``unirag eval qa``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from unirag.cli.common import err, out, print_json
from unirag.cli.groups import app, eval_app, index_app

ModelOpt = typer.Option(None, "--model", help="Trained OneGen model folder (default: the trained default model).")


@app.command("link")
def link(
    text: str = typer.Argument(..., help="The text whose entity mentions are linked."),
    model: Optional[str] = ModelOpt,
    index: Optional[Path] = typer.Option(None, "--index", help="Entity index folder (default: the model's own "
                                         "index of the Wikipedia articles)."),
    candidates: int = typer.Option(3, help="Candidates shown per mention."),
    as_json: bool = typer.Option(False, "--json", help="Print the spans as JSON."),
) -> None:
    """Mark entity mentions in TEXT and link each to a Wikipedia article, with scores."""
    from unirag.onegen.linking import EntityLinker

    from unirag.onegen.linking import load_linker

    linker, _ = load_linker(model, index, progress=not as_json, candidates=max(candidates, 1))
    spans = linker.link([text])[0]
    if as_json:
        print_json({"text": text, "entities": [s.to_dict() for s in spans]})
        return
    if not spans:
        out.print("[dim]no entity mention found[/]")
    for s in spans:
        where = f"{s.start}-{s.end}" if s.start >= 0 else "?"
        alts = ", ".join(f"{e} {sc:.3f}" for e, sc in s.candidates[: candidates - 1])
        out.print(f"{where:>9}  {s.surface!r} -> [bold]{s.entity}[/] ({s.score:.3f})"
                  + (f" [dim]| {alts}[/]" if alts else ""), highlight=False)


@eval_app.command("linking")
def eval_linking(
    limit: Optional[int] = typer.Option(None, help="Only the first N held-out documents."),
    model: Optional[str] = ModelOpt,
    index: Optional[Path] = typer.Option(None, "--index", help="Entity index folder (default: built once)."),
    batch_size: int = typer.Option(8, help="Documents decoded together."),
    threshold: Optional[float] = typer.Option(None, help="NIL threshold: drop mentions whose best entity scores "
                                              "below it (default: the one tuned into the model folder, if any)."),
    tune: bool = typer.Option(False, "--tune", help="First fit the NIL threshold on development documents "
                              "(training-split documents absent from --train-file) and save it into the "
                              "model folder (linking.json)."),
    train_file: Path = typer.Option(Path("runs/onegen/data/train.jsonl"), help="With --tune: the model's "
                                    "training file, whose linking documents the development set leaves out."),
    dev_docs: int = typer.Option(120, min=1, help="With --tune: development documents."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Micro precision / recall / F1 and disambiguation accuracy on held-out Wikipedia summaries,
    with and without the NIL threshold."""
    from unirag.onegen.linking import (heldout_linking_docs, keep_above, linking_scores, load_linker,
                                       read_threshold, tune_threshold)

    if tune and not train_file.is_file():
        raise typer.BadParameter(f"{train_file}: no such training file", param_hint="--train-file")
    if tune:  # before the model loads
        from unirag.config.base import ConfigError
        from unirag.onegen.docindex import resolve_onegen_dir
        from unirag.onegen.linking import check_tunable

        try:
            check_tunable(resolve_onegen_dir(model))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from None
    linker, folder = load_linker(model, index, progress=not as_json, threshold=None)
    report: dict = {"model": str(folder)}
    if tune:
        report["tuned"] = tune_threshold(linker, folder, train_file, dev_docs, batch_size)
    t = threshold if threshold is not None else read_threshold(folder)
    docs = heldout_linking_docs(limit)
    gold = [g for _, g in docs]
    pred = linker.link([t_ for t_, _ in docs], batch_size=batch_size)   # every mention, then the threshold
    report |= {"threshold": t, **linking_scores([keep_above(p, t) for p in pred], gold),
               "without_threshold": linking_scores(pred, gold)}
    if as_json:
        print_json(report)
        return
    for key, val in report.items():
        if isinstance(val, dict):
            val = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in val.items())
        out.print(f"{key:>24}: {val:.1f}" if isinstance(val, float) else f"{key:>24}: {val}", highlight=False)


@index_app.command("onegen")
def index_onegen(
    out_dir: Path = typer.Argument(..., help="Index folder to write."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Corpus file or folder (default: the packaged "
                                          "Wikipedia summaries)."),
    model: Optional[str] = ModelOpt,
    entities: bool = typer.Option(False, "--entities", help="Entity knowledge base (entity token) instead of "
                                  "documents (the corpus option is then ignored)."),
    batch_size: int = typer.Option(16, help="Documents embedded per forward."),
) -> None:
    """Embed a corpus with a OneGen model (document token) into a unirag index folder."""
    from unirag.onegen.docindex import build_onegen_index, model_name, resolve_onegen_dir
    from unirag.onegen.model import OneGenModel

    folder = resolve_onegen_dir(model)
    og = OneGenModel.from_pretrained(folder, merge=True)
    if entities:
        from unirag.onegen.linking import build_entity_index

        path = build_entity_index(out_dir, og, name=model_name(folder) + "#entity")
    else:
        from unirag.corpus import read_corpus
        from unirag.data import wiki_passages

        passages = read_corpus(corpus) if corpus else wiki_passages()
        path = build_onegen_index(passages, out_dir, og, name=model_name(folder), batch_size=batch_size)
    out.print(f"wrote {path}")

"""OneGen inference commands: ``unirag link``, ``unirag eval qa``, ``unirag eval linking``,
``unirag index onegen``, and :func:`ask_onegen` behind ``unirag ask --engine onegen``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from unirag.cli.common import err, out, print_json
from unirag.cli.groups import app, eval_app, index_app

ModelOpt = typer.Option(None, "--model", help="Trained OneGen model folder (default: the trained default model).")


def load_engine(model: str | Path | None, index: str | Path | None, role: str = "document",
                progress: bool = True) -> tuple[Any, Any, Path]:
    """``(OneGenModel, OneGenIndex, model folder)``; the index defaults to the model's own index of
    the Wikipedia corpus (built once, cached)."""
    from unirag.index.errors import IndexMismatchError
    from unirag.onegen.docindex import OneGenIndex, ensure_onegen_index, model_name, resolve_onegen_dir
    from unirag.onegen.model import OneGenModel

    folder = resolve_onegen_dir(model)
    og = OneGenModel.from_pretrained(folder, merge=True)
    if index is None:
        if progress:
            err.print(f"[dim]OneGen {role} index for {folder} (built on first use: every corpus passage is "
                      "embedded by the model)[/]")
        idx = OneGenIndex.load(ensure_onegen_index(og, folder, role=role, progress=progress),
                               model_name=model_name(folder) + ("" if role == "document" else f"#{role}"))
    else:
        idx = OneGenIndex.load(index)
        if idx.index.manifest.encoder_info.get("kind") != "onegen":
            raise IndexMismatchError(f"{index} holds vectors of '{idx.index.manifest.encoder}', not of a OneGen "
                                     "model: build one with `unirag index onegen`")
    return og, idx, folder


def ask_onegen(question: str, index: Optional[Path] = None, max_new_tokens: int = 96, as_json: bool = False,
               stream: bool = True, model: str | Path | None = None, k: int = 1, max_retrievals: int = 4,
               threshold: float | None = None, temperature: float = 0.0,
               retrieve_prob: float | None = None) -> dict[str, Any]:
    """Answer ``question`` with the OneGen engine (retrieval inside generation) and print it:
    streamed text with retrieval events, then the sources with steps and scores; ``as_json``
    prints ``{question, answer, text, sources, trace}`` instead. Returns that dict."""
    from unirag.onegen.engine import DoneEvent, OneGenEngine, RetrievalEvent, SamplingParams, TextEvent
    from unirag.onegen.qa import PASSAGE_WORDS, extract_answer, qa_prompt, tail_after_retrieval

    og, idx, folder = load_engine(model, index, progress=not as_json)
    params = SamplingParams(max_new_tokens=max_new_tokens, k=k, max_retrievals=max_retrievals, threshold=threshold,
                            temperature=temperature, max_passage_words=PASSAGE_WORDS, retrieve_prob=retrieve_prob)
    engine = OneGenEngine(og, idx)
    live = stream and not as_json
    passages: dict[str, Any] = {}
    result = None
    for ev in engine.stream(qa_prompt(og, question), params):
        if isinstance(ev, TextEvent) and live:
            out.print(ev.text, end="", highlight=False, soft_wrap=True, markup=False)
        elif isinstance(ev, RetrievalEvent):
            passages.update({p.id: p for p in ev.passages})
            if live:
                got = ", ".join(ev.retrieval.inserted) or "nothing above the threshold"
                out.print(f" [dim]\u27e8retrieved: {got}\u27e9[/] ", end="", highlight=False)
        elif isinstance(ev, DoneEvent):
            result = ev.output
    assert result is not None
    answer = extract_answer(tail_after_retrieval(result, og.tokenizer)) or result.text.strip()
    sources = [{"id": pid, "title": passages[pid].title, "step": r.step,
                "score": round(float(r.scores[r.ids.index(pid)]), 6),
                "text": passages[pid].text} for r in result.trace for pid in r.inserted]
    data = {"question": question, "answer": answer, "text": result.text, "sources": sources,
            "trace": [r.to_dict() for r in result.trace], "model": str(folder), "index": str(idx.path)}
    if as_json:
        print_json(data)
    else:
        if not live:
            out.print(result.text, highlight=False, markup=False)
        out.print("\n[bold]Sources[/]" if sources else "\n[dim]no passage retrieved[/]")
        for i, s in enumerate(sources, 1):
            out.print(f"  [{i}] {s['title']} [dim](step {s['step']}, score {s['score']:.3f})[/]", highlight=False)
    return data


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

    og, idx, _ = load_engine(model, index, role="entity", progress=not as_json)
    spans = EntityLinker(og, idx, candidates=max(candidates, 1)).link([text])[0]
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


@eval_app.command("qa")
def eval_qa(
    kind: str = typer.Option("single", help="single (FanOutQA sub-questions) or multi (top-level questions)."),
    systems: str = typer.Option("onegen,pipeline,closed_book", help="Comma-separated systems to run."),
    limit: Optional[int] = typer.Option(None, help="Only the first N questions."),
    model: Optional[str] = ModelOpt,
    index: Optional[Path] = typer.Option(None, "--index", help="OneGen index folder (default: built once)."),
    k: int = typer.Option(1, "-k", help="Passages inserted per query token."),
    max_retrievals: int = typer.Option(4, help="Query tokens honoured per answer."),
    max_new_tokens: int = typer.Option(64, help="Token budget per answer."),
    batch_size: int = typer.Option(8, help="Questions decoded together."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Write per-question predictions here."),
    corpus_size: Optional[int] = typer.Option(None, help="Search a corpus sample: the evidence pages plus random "
                                              "passages, this many in all (default: all 10,033 passages)."),
    retrieve_first: bool = typer.Option(False, "--retrieve-first", help="OneGen emits the query token first "
                                        "(for a model that has not learned when to retrieve)."),
    pipeline_k: int = typer.Option(3, help="Passages the retrieve-then-read baseline puts in the prompt."),
    retrieve_prob: Optional[float] = typer.Option(None, help="OneGen also retrieves whenever the query token's "
                                                  "probability reaches this value (adaptive threshold)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """EM / F1 / evidence recall on held-out FanOutQA: OneGen vs retrieve-then-read vs closed book."""
    from unirag.onegen.benchmark import evaluate_qa
    from unirag.onegen.docindex import resolve_onegen_dir

    folder = resolve_onegen_dir(model)
    report = evaluate_qa(folder, kind, limit, [s.strip() for s in systems.split(",") if s.strip()],
                         str(index) if index else None, k, max_retrievals, max_new_tokens, batch_size,
                         pipeline_k=pipeline_k, progress=not as_json, out_dir=out_dir, corpus_size=corpus_size,
                         retrieve_first=retrieve_first, retrieve_prob=retrieve_prob)
    if as_json:
        print_json(report)
        return
    from rich.table import Table

    table = Table(title=f"held-out FanOutQA ({kind}, n={report['n']}, corpus: {report['corpus']})")
    for col in ("system", "EM", "F1", "evidence recall", "retrievals", "seconds"):
        table.add_column(col)
    for name, m in report["systems"].items():
        rec = m.get("evidence_recall")
        table.add_row(name, f"{m['em']:.1f}", f"{m['f1']:.1f}", "-" if rec is None else f"{rec:.1f}",
                      f"{m.get('mean_retrievals', 0):.2f}", f"{m['seconds']:.0f}")
    out.print(table)


@eval_app.command("linking")
def eval_linking(
    limit: Optional[int] = typer.Option(None, help="Only the first N held-out documents."),
    model: Optional[str] = ModelOpt,
    index: Optional[Path] = typer.Option(None, "--index", help="Entity index folder (default: built once)."),
    batch_size: int = typer.Option(8, help="Documents decoded together."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Micro precision / recall / F1 and disambiguation accuracy on held-out Wikipedia summaries."""
    from unirag.onegen.linking import EntityLinker, heldout_linking_docs, linking_scores

    og, idx, folder = load_engine(model, index, role="entity", progress=not as_json)
    docs = heldout_linking_docs(limit)
    pred = EntityLinker(og, idx).link([t for t, _ in docs], batch_size=batch_size)
    report = {"model": str(folder), **linking_scores(pred, [g for _, g in docs])}
    if as_json:
        print_json(report)
        return
    for key, val in report.items():
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

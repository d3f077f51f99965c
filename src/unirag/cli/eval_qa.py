"""``unirag eval qa``: any engines, through the door, on FanOutQA held-out sets or a user's JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import DtypeOpt, HopModeOpt, PlanExamplesOpt, out, print_json
from unirag.cli.groups import eval_app
from unirag.models.registry import DEFAULT_GENERATOR


@eval_app.command("qa")
def eval_qa(
    engines: str = typer.Option("pipeline,onegen,closed-book", "--engine", "-e", help="Comma-separated engines: "
                                "pipeline, rag-token, rag-sequence, onegen, closed-book."),
    qa_set: str = typer.Option("fanoutqa-single", "--set", help="fanoutqa-single (160 held-out sub-questions), "
                               "fanoutqa-multi (93 held-out top-level questions), or a JSONL file of question, "
                               "answers, optional evidence (passage ids) and id."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N questions."),
    index: Optional[Path] = typer.Option(None, "--index", "-i", help="Index folder of the pipeline and RAG engines "
                                         "(default: the built-in Wikipedia index)."),
    onegen_index: Optional[Path] = typer.Option(None, help="OneGen index folder (default: the model's own index "
                                                "of the Wikipedia corpus)."),
    retriever: str = typer.Option("dense", "--retriever", "-r", help="Pipeline retriever: dense, bm25, hybrid."),
    generator: str = typer.Option(DEFAULT_GENERATOR, help="Reader of the pipeline, closed-book and RAG "
                                  "engines ('onegen': the LM of the OneGen model of --model, for a same-LM "
                                  "comparison)."),
    dtype: Optional[str] = DtypeOpt,
    model: Optional[str] = typer.Option(None, "--model", help="OneGen model folder (default: trained default, "
                                        "else the packaged adapter)."),
    rag_model: Optional[str] = typer.Option(None, help="Trained RAG model folder for rag-token / rag-sequence."),
    k: Optional[int] = typer.Option(None, "-k", min=1, help="Passages per question (pipeline 3, RAG 4) or per "
                                    "query token (OneGen 1)."),
    max_new_tokens: int = typer.Option(64, min=1, help="Token budget per answer."),
    no_repeat_ngram: Optional[int] = typer.Option(None, min=0, help="Forbid any n-gram of this many tokens to occur "
                                                  "twice in an answer (0 = off; prompt and passages do not count; "
                                                  "default: the engine's, OneGen 3, the others off)."),
    max_retrievals: int = typer.Option(4, min=0, help="OneGen: query tokens honoured per answer."),
    retrieve_first: bool = typer.Option(False, "--retrieve-first", help="OneGen emits the query token first."),
    retrieve_prob: Optional[float] = typer.Option(None, min=0.0, help="OneGen also retrieves whenever the query "
                                                  "token's probability reaches this value."),
    passage_words: Optional[int] = typer.Option(None, "--passage-words", min=1, help="OneGen: words of each "
                                                "inserted passage (default: the model's own, as in its training data)."),
    hops: int = typer.Option(1, "--hops", min=1, help="Pipeline: retrievals per question (1 = single-shot; more: "
                             "the reader writes a follow-up search between them, -k passages per hop)."),
    max_passages: Optional[int] = typer.Option(None, "--max-passages", min=1, help="Pipeline multi-hop: passages "
                                               "read in all (default hops x k)."),
    hop_mode: str = HopModeOpt,
    plan_examples: Optional[Path] = PlanExamplesOpt,
    batch_size: int = typer.Option(8, min=1, help="Questions decoded together."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Write report.json and per-question "
                                           "predictions (qa-<set>-<engine>.jsonl) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """EM, F1, evidence recall, passages used, retrievals per question and latency p50/p95 of each
    engine on the same questions, with the same sampling parameters (greedy)."""
    from unirag.api import RAG, LoadConfig
    from unirag.config.base import atomic_write_text
    from unirag.data.qa import load_qa_set
    from unirag.eval.harness import evaluate_qa
    from unirag.sampling_params import SamplingParams

    names = [e.strip() for e in engines.split(",") if e.strip()]
    if not names:
        raise typer.BadParameter("no engine given", param_hint="--engine")
    configs = {}
    for name in names:  # every option is checked before any model loads
        ix = onegen_index if name == "onegen" else index
        mdl = rag_model if name.startswith("rag") else model if name == "onegen" or generator == "onegen" else None
        multi = dict(hops=hops, max_passages=max_passages, hop_mode=hop_mode,
                     plan_examples=str(plan_examples) if plan_examples else None) if name == "pipeline" else {}
        cfg = LoadConfig(name, str(ix) if ix else None, generator, retriever, mdl, k, **multi,
                         dtype=dtype if name in ("pipeline", "closed-book", "onegen") else None).validate()
        configs[cfg.engine] = cfg
    items = load_qa_set(qa_set)[:limit]
    params = SamplingParams(max_new_tokens=max_new_tokens, max_retrievals=max_retrievals, retrieve_prob=retrieve_prob,
                            force_query_at=[0] if retrieve_first else [], k=k,
                            max_passage_words=passage_words, no_repeat_ngram=no_repeat_ngram)
    tag = Path(qa_set).stem if Path(qa_set).suffix else qa_set
    report: dict = {"set": qa_set, "n": len(items), "params": params.to_dict(), "engines": {}}
    for name, cfg in configs.items():
        rag = RAG.from_config(cfg, progress=not as_json)
        pred = out_dir / f"qa-{tag}-{name}.jsonl" if out_dir else None
        metrics = evaluate_qa(rag, items, params, batch_size=batch_size, progress=not as_json, predictions=pred)
        report["engines"][name] = {"config": cfg.to_dict(), **metrics}
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    if as_json:
        print_json(report)
        return
    from rich.table import Table

    table = Table(title=f"{qa_set} (n={len(items)})")
    for col in ("engine", "EM", "F1", "evidence recall", "passages", "retrievals", "p50 s", "p95 s", "seconds"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for name, m in report["engines"].items():
        rec = m.get("evidence_recall")
        table.add_row(name, f"{m['em']:.1f}", f"{m['f1']:.1f}", "-" if rec is None else f"{rec:.1f}",
                      f"{m['passages_used']:.2f}", f"{m['mean_retrievals']:.2f}", f"{m['latency_p50']:.2f}",
                      f"{m['latency_p95']:.2f}", f"{m['seconds']:.0f}")
    out.print(table)

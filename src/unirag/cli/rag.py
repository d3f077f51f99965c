"""``unirag train rag``, ``unirag train retriever`` and ``unirag rag ask|swap-demo``: thin commands over
``unirag.train.rag``, ``unirag.train.retriever`` and ``unirag.rag``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from unirag.cli.groups import app, train_app

rag_app = typer.Typer(help="Classic RAG (Lewis et al. 2020): answer with attribution, swap the index.",
                      no_args_is_help=True)
app.add_typer(rag_app, name="rag")


@train_app.command("rag")
def train_rag_cmd(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="YAML file of RagTrainConfig fields (see configs/rag_token_smollm2.yaml)."),
) -> None:
    """Jointly train a RAG model's query encoder and generator on (question, answer) pairs.

    The YAML names the variant (token / sequence), the query encoder, the generator (optional LoRA),
    the index folder, K documents per question, the training data (``fanoutqa`` or a JSONL file of
    ``{"question", "answers"}``), steps, learning rates and seed. The document encoder and the index
    stay frozen. Writes ``checkpoints/step-N`` (resumable), ``log.jsonl`` (loss, entropy of p(z|x),
    dev recall: the retrieval-collapse monitor), ``final/`` (save_pretrained) and ``summary.json``
    (EM/F1 on the dev data before and after training). Re-running resumes from the last checkpoint.
    """
    from unirag.train.dist import is_main_process
    from unirag.train.rag import RagTrainConfig, train_rag

    summary = train_rag(RagTrainConfig.load(config))
    if not is_main_process():   # under `accelerate launch`: the main process reports
        return
    typer.echo(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}
                          | {k: {m: v[m] for m in ("em", "f1") if m in v} for k, v in summary.items()
                             if isinstance(v, dict)}, indent=2))


@train_app.command("retriever")
def train_retriever_cmd(
    config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False,
                                help="YAML file of DprTrainConfig fields (see configs/dpr.yaml)."),
) -> None:
    """Train a DPR bi-encoder with in-batch negatives plus BM25 hard negatives.

    For corpora without a good off-the-shelf encoder: the YAML names the base encoder, the corpus or
    index folder (its BM25 index gives hard negatives), (question, gold passage id) training pairs,
    steps and learning rate. The trained query and passage encoders are saved, an index over the
    corpus is rebuilt with the new passage encoder, and recall/MRR/nDCG before and after are
    written to ``summary.json``.
    """
    from unirag.train.dist import is_main_process
    from unirag.train.retriever import DprTrainConfig, train_retriever

    summary = train_retriever(DprTrainConfig.load(config))
    if is_main_process():   # under `accelerate launch`: the main process reports
        typer.echo(json.dumps(summary, indent=2))


@rag_app.command("ask")
def ask_cmd(
    model: Path = typer.Argument(..., help="A folder written by RagModel.save_pretrained (e.g. runs/…/final)."),
    question: list[str] = typer.Argument(..., help="One or more questions."),
    index: Path | None = typer.Option(None, help="Use this index folder instead of the saved one."),
    variant: str | None = typer.Option(None, help="token or sequence (default: the model's)."),
    decoding: str | None = typer.Option(None, help="greedy, sample, beam (token); thorough, fast (sequence)."),
    beams: int = typer.Option(2, help="Beam size."),
) -> None:
    """Answer questions and show which passage supported which words."""
    from unirag.rag.model import RagModel

    m = RagModel.from_pretrained(model, index=index)
    for r in m.generate(list(question), variant=variant, decoding=decoding, num_beams=beams):
        typer.echo(f"Q: {r.question}\nA: {r.answer}")
        for k, p in enumerate(r.passages):
            typer.echo(f"  [{k}] p(z|x)={r.doc_prior[k]:.2f} p(z|x,y)={r.doc_posterior[k]:.2f}  {p.title}")
        typer.echo("  spans: " + " | ".join(f"{s.text!r}<-[{s.doc}] {s.prob:.2f}" for s in r.spans))


@rag_app.command("swap-demo")
def swap_demo_cmd(
    model: Path = typer.Argument(..., help="A folder written by RagModel.save_pretrained."),
    out: Path = typer.Option(Path("runs/rag-swap"), help="Where the two index folders and results go."),
    n: int = typer.Option(16, help="Number of questions whose fact differs between the corpora."),
    decoding: str | None = typer.Option(None, help="Decoding (default: the model variant's)."),
) -> None:
    """The knowledge-update experiment: same model, index A then index B (facts changed), no reload."""
    from unirag.rag.model import RagModel
    from unirag.rag.swap import build_swap_indexes, run_swap, swap_items

    items = swap_items(n)
    a, b = build_swap_indexes(items, out)
    m = RagModel.from_pretrained(model, index=a)
    res = run_swap(m, items, a, b, decoding=decoding, num_beams=1)
    (out / "swap.json").write_text(json.dumps(res, indent=2) + "\n")
    for r in res["rows"]:
        typer.echo(f"{r['question']}\n  A says {r['fact_a']!r}: {r['answer_before']!r}\n"
                   f"  B says {r['fact_b']!r}: {r['answer_after']!r}")
    typer.echo(json.dumps({k: v for k, v in res.items() if k != "rows"}))

"""``unirag train onegen`` (fine-tune a OneGen model from a YAML recipe) and ``unirag train
onegen-data`` (build the packaged training set, or convert HotpotQA / 2Wiki / Self-RAG files)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from unirag.cli.groups import train_app


@train_app.command("onegen")
def train_onegen_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="YAML recipe (see configs/onegen_smollm2.yaml): data "
                                "files, base model, OneGen tokens and loss, LoRA (or null for full fine-tuning), "
                                "optimiser, steps, checkpoints."),
    output_dir: str = typer.Option("", help="Override the recipe's output folder."),
    max_steps: int = typer.Option(-1, help="Override the recipe's max_steps (-1 = keep)."),
    max_minutes: float = typer.Option(-1.0, help="Override the recipe's time budget in minutes (0 = none, -1 = keep)."),
    stop_at_step: int = typer.Option(0, help="Stop (and checkpoint) at this step, keeping the recipe's schedule."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start over even if checkpoints exist."),
) -> None:
    """Fine-tune a causal LM into a OneGen model: it learns to write retrieval tokens (LM loss) whose
    hidden states retrieve the right documents (contrastive loss). Resumes from the latest
    checkpoint in checkpoint_dir. Several processes (GPUs, or CPU with gloo):
    `accelerate launch --num_processes N -m unirag.cli.app train onegen ...` (docs/distributed.md)."""
    from unirag.train.dist import is_main_process
    from unirag.train.onegen import OneGenTrainConfig, train_onegen

    cfg = OneGenTrainConfig.load(config)
    if output_dir:
        cfg.output_dir = output_dir
    if max_steps >= 0:
        cfg.max_steps = max_steps
    if max_minutes >= 0:
        cfg.max_minutes = max_minutes
    if stop_at_step:
        cfg.stop_at_step = stop_at_step
    if no_resume:
        cfg.resume = False
    summary = train_onegen(cfg)
    if is_main_process():
        typer.echo(json.dumps(summary, indent=2))


@train_app.command("onegen-data")
def onegen_data_cmd(
    out: Path = typer.Option(Path("runs/onegen/data"), help="Output folder (train.jsonl, heldout.jsonl, docs.jsonl)."),
    source: str = typer.Option("packaged", help="'packaged' (FanOutQA x Wikipedia + Wikidata descriptions), "
                               "'hotpotqa', '2wiki' or 'selfrag'."),
    input: Path = typer.Option(None, help="Input file for hotpotqa / 2wiki / selfrag (JSON array or JSONL)."),
    descriptions: int = typer.Option(150, help="packaged: single-hop examples from Wikidata descriptions "
                                     "(they end with the passage title)."),
    passage_words: int = typer.Option(None, help="packaged: words of each inserted passage (default: the "
                                      "model config's passage_words, 48, which inference uses too)."),
    max_hops: int = typer.Option(4, "--max-hops", "--max-leaves", help="packaged: FanOutQA sub-questions per multi-hop example."),
    fill_hops: bool = typer.Option(True, help="packaged: fill multi-hop examples with sub-questions whose page is "
                                   "outside the corpus (BM25 passage inserted, LM loss only)."),
    negatives: int = typer.Option(3, help="BM25 hard negatives per retrieval."),
    linking: int = typer.Option(1000, help="packaged: entity-linking training documents mixed in (0 = none)."),
    leaves: bool = typer.Option(True, help="packaged: add single-hop examples from the FanOutQA sub-questions."),
    answer_loss: str = typer.Option("all", help="packaged: which FanOutQA answers written after a passage carry "
                                    "LM loss: 'all', or 'supported' (only those the inserted passage holds)."),
    reading: int = typer.Option(0, min=0, help="packaged: single-hop examples whose answer the inserted passage "
                                "states (patterns of Wikipedia lead sentences; 0 = none)."),
    preset: str = typer.Option("", help="packaged: 'first-release' rebuilds the data of the first packaged "
                               "adapter (32-word passages, 2 hops, 400 descriptions, 500 linking documents); "
                               "the other packaged options are then ignored."),
) -> None:
    """Build OneGen training data in the documented JSONL schema (docs/onegen.md)."""
    if source == "packaged":
        from unirag.onegen.datasets import FIRST_RELEASE_DATA, OneGenDataConfig, build_onegen_data

        if preset not in ("", "first-release"):
            raise typer.BadParameter(f"unknown preset {preset!r} (first-release)", param_hint="--preset")
        try:
            data = FIRST_RELEASE_DATA if preset else OneGenDataConfig(
                passage_words=passage_words, descriptions=descriptions, leaves=leaves, max_hops=max_hops,
                fill_hops=fill_hops, linking=linking, negatives=negatives, answer_loss=answer_loss,
                reading=reading)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--answer-loss" if "answer_loss" in str(exc) else None) from None
        counts = build_onegen_data(out, data)
    elif source in ("hotpotqa", "2wiki", "selfrag"):
        if input is None:
            raise typer.BadParameter(f"--input is required for --source {source}")
        from unirag.onegen.converters import convert_multihop, convert_selfrag
        from unirag.onegen.data import load_documents, load_examples, write_examples
        from unirag.onegen.mining import mine_bm25_negatives

        counts = convert_selfrag(input, out) if source == "selfrag" else convert_multihop(input, out)
        if negatives:
            docs = load_documents(out / "docs.jsonl")
            examples = load_examples(out / "train.jsonl", docs=docs)
            mine_bm25_negatives(examples, docs, k=negatives)
            write_examples(examples, out / "train.jsonl")
    else:
        raise typer.BadParameter(f"unknown source {source!r}")
    typer.echo(json.dumps(counts, indent=2))

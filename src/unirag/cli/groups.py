"""Command groups shared by the CLI modules: ``unirag index|eval|train ...``.

Each CLI module adds its commands to these groups; ``unirag.cli.app`` imports the modules.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="unirag",
    help="Retrieval-augmented generation, offline: classic RAG (Lewis et al. 2020) and OneGen "
    "(one model retrieves and generates). Defaults: the Qwen2.5-Coder-0.5B-Instruct reader "
    "(SmolLM2-135M-Instruct: the small one and OneGen's backbone), all-MiniLM-L6-v2 and 10,033 "
    "Wikipedia summaries, all installed as packages; no network needed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
index_app = typer.Typer(help="Build and inspect index folders (doc store + FAISS + BM25).", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate retrieval, question answering and entity linking.", no_args_is_help=True)
train_app = typer.Typer(help="Train models: OneGen, RAG, DPR retrievers.", no_args_is_help=True)
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="UNIRAG_DEBUG",
                               help="Print the full traceback of unexpected errors (also UNIRAG_DEBUG=1)."),
) -> None:
    from unirag.cli.common import set_debug

    set_debug(debug)

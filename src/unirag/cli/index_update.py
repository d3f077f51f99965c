"""``unirag index update``: add, replace and delete passages of an index folder (a new version,
swapped in atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import out, print_json, usage_error
from unirag.cli.groups import index_app


@index_app.command("update")
def index_update(
    path: Path = typer.Argument(..., help="Index folder to update."),
    add: Optional[str] = typer.Option(None, "--add", help="Passages to add (a .jsonl, DPR .tsv or folder, as for `index build`); an id the index holds is replaced."),
    delete: list[str] = typer.Option([], "--delete", help="A passage id to delete (repeat the option for several)."),
    delete_file: Optional[Path] = typer.Option(None, "--delete-file", help="A file of passage ids to delete, one per line."),
    encoder: Optional[str] = typer.Option(None, help="Encoder of the index (default: the one its manifest names)."),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Skip delete ids the index does not hold (default: an error, nothing changes)."),
    batch_size: int = typer.Option(64, help="Embedding batch size."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write the next version of an index folder: only new and changed passages are embedded, the doc
    store and BM25 are rebuilt (deleted text is gone from every file), factory and encoder kept."""
    from unirag.corpus import read_corpus
    from unirag.retrieval.update import update_index

    ids = list(delete)
    if delete_file is not None:
        if not delete_file.is_file():
            raise usage_error("--delete-file", f"{delete_file}: no such file")
        ids += [line.strip() for line in delete_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if add is None and not ids:
        raise usage_error("--add / --delete", "nothing to do: give passages to add and/or ids to delete")
    if batch_size < 1:
        raise usage_error("--batch-size", f"must be at least 1, got {batch_size}")
    res = update_index(path, encoder, add=read_corpus(add) if add is not None else (), delete=ids,
                       missing_ok=missing_ok, batch_size=batch_size, progress=not as_json)
    if as_json:
        print_json(res.to_dict())
        return
    out.print(f"[green]updated[/] {path}: {res.added} added, {res.replaced} replaced, {res.deleted} deleted, "
              f"{res.embedded} embedded, {res.passages} passages ({res.seconds:.1f} s)")
    if res.missing:
        out.print(f"not in the index (skipped): {', '.join(res.missing[:10])}" + (" ..." if len(res.missing) > 10 else ""))

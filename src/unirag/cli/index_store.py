"""``unirag index export-store``: copy an index folder's vectors into an external vector store
(pgvector, Milvus) and write a folder that points at it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import out, print_json, usage_error
from unirag.cli.groups import index_app


@index_app.command("export-store")
def index_export_store(
    path: Path = typer.Argument(..., help="FAISS index folder whose vectors to copy."),
    uri: str = typer.Argument(..., help="The store: pgvector://user@host:port/db?table=name (or "
                                        "pgvector:///db?host=/socket/dir&table=name) or milvus://host:port/collection; "
                                        "append &index=hnsw (pgvector) / ?index=HNSW (Milvus) for an ANN index."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="The folder to write (default: <PATH>-<backend>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Drop and recreate the table / collection if it exists."),
    batch: int = typer.Option(20_000, help="Vectors per insert."),
    as_json: bool = typer.Option(False, "--json", help="Print the new folder's manifest as JSON."),
) -> None:
    """Copy the vectors of an index folder into a pgvector table or Milvus collection (row = doc-store
    row) and write an index folder that points at it: same doc store and BM25, no index.faiss. Every
    command that takes an index folder then searches the store."""
    from unirag.index.folder import IndexFolder
    from unirag.index.store import export_store, is_store_uri

    if not is_store_uri(uri):
        raise usage_error("URI", f"{uri!r}: expected pgvector://... or milvus://...")
    if batch < 1:
        raise usage_error("--batch", f"must be at least 1, got {batch}")
    try:
        dest = export_store(path, uri, out_dir, batch=batch, overwrite=overwrite, progress=not as_json)
    except (ImportError, ConnectionError) as exc:
        raise usage_error("URI", str(exc)) from None
    m = IndexFolder(dest).read_manifest()
    if as_json:
        print_json({"path": str(dest), **m.to_dict()})
        return
    out.print(f"[green]exported[/] {m.count} vectors to {m.extra['store']}; folder {dest}")

"""``unirag index add|delete|sync|docs``: documents (PDF, HTML, Word, Markdown, text) in an index
folder, kept current. Each command writes one new version of the folder, swapped in atomically.

Exit codes: 0 every document is indexed (or skipped: nothing to index, e.g. an empty file);
3 the update was written but at least one document failed (its reason is printed and kept in
``index docs``); 2 bad input (nothing written); 1 internal error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unirag.cli.common import out, print_json, usage_error
from unirag.cli.groups import index_app

EXIT_FAILED = 3

IndexOpt = typer.Option(..., "--index", "-i", help="Index folder (created when missing, with --encoder).")
EncoderOpt = typer.Option(None, help="Encoder of a new index (default all-minilm-l6-v2); an existing index "
                          "uses the one its manifest names.")
IncludeOpt = typer.Option([], "--include", help="Glob of files to take from folders (repeatable; matched against "
                          "the relative path and the file name; default: every file).")
ExcludeOpt = typer.Option([], "--exclude", help="Glob of files or folders to leave out (repeatable).")
MaxTokOpt = typer.Option(None, "--max-tokens", help="Passage size in tokens of the index's encoder (default: the "
                         "index's setting, else 200 capped by the encoder's max length).")
OverlapOpt = typer.Option(None, "--overlap", help="Tokens repeated between consecutive passages of a section.")
SplitOpt = typer.Option(None, "--split-words", help="DPR-style windows of this many words instead of "
                        "structure-aware passages.")
ForceOpt = typer.Option(False, "--force", help="Re-read every file, changed or not.")
ChecksumOpt = typer.Option(False, "--checksum", help="Hash every file instead of trusting an unchanged size and "
                           "modification time.")
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON.")


def _check(max_tokens: Optional[int], overlap: Optional[int], split_words: Optional[int]) -> None:
    if max_tokens is not None and max_tokens < 1:
        raise usage_error("--max-tokens", f"must be at least 1, got {max_tokens}")
    if overlap is not None and overlap < 0:
        raise usage_error("--overlap", f"must be at least 0, got {overlap}")
    if split_words is not None and split_words < 0:
        raise usage_error("--split-words", f"must be at least 0, got {split_words}")
    size = split_words or max_tokens
    if overlap and size and overlap >= size:
        raise usage_error("--overlap", f"must be smaller than the passage size ({size}), got {overlap}")


def _report(res, as_json: bool, verb: str) -> None:
    if as_json:
        print_json(res.to_dict())
    else:
        for d in res.documents:
            if d.status in ("failed", "skipped"):
                colour = "red" if d.status == "failed" else "yellow"
                out.print(f"[{colour}]{d.status}[/] {d.id}: {d.reason}", highlight=False)
        where = f"{res.folder}" + (" (created)" if res.created else "")
        if not res.written:
            out.print(f"[green]{verb}[/] {where}: nothing to change ({res.summary()})", highlight=False)
        else:
            extra = f", {res.removed_passages} passages of no document removed" if res.removed_passages else ""
            secs = f" ({res.seconds:.1f} s)"
            out.print(f"[green]{verb}[/] {where}: {res.summary()}{extra}{secs}", highlight=False)
    if not res.ok:
        raise typer.Exit(EXIT_FAILED)


@index_app.command("add")
def index_add(
    paths: list[Path] = typer.Argument(..., help="Files and folders to add (folders recursively)."),
    index: Path = IndexOpt,
    encoder: Optional[str] = EncoderOpt,
    root: Optional[Path] = typer.Option(None, "--root", help="Document ids of files given by name are their path "
                                        "relative to this folder (default: the file name)."),
    include: list[str] = IncludeOpt,
    exclude: list[str] = ExcludeOpt,
    max_tokens: Optional[int] = MaxTokOpt,
    overlap: Optional[int] = OverlapOpt,
    split_words: Optional[int] = SplitOpt,
    force: bool = ForceOpt,
    checksum: bool = ChecksumOpt,
    factory: str = typer.Option("Flat", help="FAISS factory string of a new index."),
    as_json: bool = JsonOpt,
) -> None:
    """Add documents: new files are indexed, changed files re-read (only their changed passages are
    embedded), unchanged ones left alone. Exit code 3 when a document failed (see the module doc)."""
    from unirag.retrieval.ingest import add_files

    _check(max_tokens, overlap, split_words)
    res = add_files(index, paths, encoder, root=root, include=include, exclude=exclude, max_tokens=max_tokens,
                    overlap=overlap, split_words=split_words, force=force, checksum=checksum, factory=factory,
                    progress=not as_json)
    _report(res, as_json, "added to")


@index_app.command("sync")
def index_sync(
    folder: Path = typer.Argument(..., help="The folder the index should mirror."),
    index: Path = IndexOpt,
    encoder: Optional[str] = EncoderOpt,
    include: list[str] = IncludeOpt,
    exclude: list[str] = ExcludeOpt,
    max_tokens: Optional[int] = MaxTokOpt,
    overlap: Optional[int] = OverlapOpt,
    split_words: Optional[int] = SplitOpt,
    force: bool = ForceOpt,
    checksum: bool = ChecksumOpt,
    factory: str = typer.Option("Flat", help="FAISS factory string of a new index."),
    as_json: bool = JsonOpt,
) -> None:
    """Make the index mirror a folder: add new files, re-read changed ones, delete documents that are
    gone (and passages of no document). Exit code 3 when a document failed."""
    from unirag.retrieval.ingest import sync_folder

    _check(max_tokens, overlap, split_words)
    res = sync_folder(index, folder, encoder, include=include, exclude=exclude, max_tokens=max_tokens,
                      overlap=overlap, split_words=split_words, force=force, checksum=checksum, factory=factory,
                      progress=not as_json)
    _report(res, as_json, "synced")


@index_app.command("delete")
def index_delete(
    ids: list[str] = typer.Argument(..., help="Document ids (paths as `index docs` lists them), paths of "
                                    "registered files, folder prefixes (notes/) or passage ids."),
    index: Path = typer.Option(..., "--index", "-i", help="Index folder."),
    missing_ok: bool = typer.Option(False, "--missing-ok", help="Skip unknown ids (default: an error, nothing "
                                    "changes)."),
    as_json: bool = JsonOpt,
) -> None:
    """Delete documents: their passages leave the dense index, BM25 and the doc store, and their text
    is in no file of the new version."""
    from unirag.retrieval.ingest import delete_documents

    res = delete_documents(index, ids, missing_ok=missing_ok)
    _report(res, as_json, "deleted from")


@index_app.command("docs")
def index_docs(
    path: Path = typer.Argument(..., help="Index folder."),
    status: Optional[str] = typer.Option(None, help="Only documents with this status: indexed, skipped, failed."),
    as_json: bool = JsonOpt,
) -> None:
    """List the documents of an index: status (indexed, skipped, failed) and reason, passage count,
    format and content hash."""
    from rich.table import Table

    from unirag.retrieval.ingest import list_documents

    if status is not None and status not in ("indexed", "skipped", "failed"):
        raise usage_error("--status", f"one of indexed, skipped, failed, not {status!r}")
    rows = [r for r in list_documents(path) if status is None or r["status"] == status]
    if as_json:
        print_json({"index": str(path), "documents": rows})
        return
    if not rows:
        out.print(f"{path}: no documents" + ("" if status else " (an index built from passages has no registry)"))
        return
    table = Table(title=f"{path}: {len(rows)} documents")
    for col in ("id", "status", "passages", "format", "sha256", "reason"):
        table.add_column(col, overflow="fold" if col in ("id", "reason") else "ellipsis")
    for r in rows:
        colour = {"failed": "red", "skipped": "yellow"}.get(r["status"], "green")
        table.add_row(r["id"], f"[{colour}]{r['status']}[/]", str(r["passages"]), r["format"], r["sha256"][:12],
                      r["reason"])
    out.print(table)

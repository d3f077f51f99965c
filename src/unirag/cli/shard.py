"""``unirag index shard``: split an index folder into N shard folders for Ray shard actors."""

from __future__ import annotations

from pathlib import Path

import typer

from unirag.cli.common import out, print_json
from unirag.cli.groups import index_app


@index_app.command("shard")
def index_shard(
    path: Path = typer.Argument(..., help="Index folder to split (dense)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Shard-set folder to write (atomically)."),
    shards: int = typer.Option(..., "--shards", "-n", min=1, help="Number of shards."),
    as_json: bool = typer.Option(False, "--json", help="Print shards.json as JSON."),
) -> None:
    """Split an index folder by a stable hash of the passage id into shard folders (each an ordinary
    index folder); open the set with `--index SHARDS` or `--index ray:///abs/SHARDS?policy=partial`."""
    from unirag.distributed.shards import balance, read_shard_set, split_index

    split_index(path, out_dir, shards, progress=not as_json)
    info = read_shard_set(out_dir)
    if as_json:
        print_json({"path": str(out_dir), "balance": balance(info), **info})
        return
    counts = ", ".join(str(s["count"]) for s in info["shards"])
    out.print(f"[green]split[/] {path} into {shards} shards at {out_dir}: {counts} passages "
              f"(largest deviation from the mean {balance(info):.1%})")

"""The ``unirag`` command: ``index build``, ``search``, ``ask``, ``eval ...``, ``train ...``."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

# Importing each module adds its commands to the shared groups.
import unirag.cli.core  # noqa: F401
import unirag.cli.eval_qa  # noqa: F401
import unirag.cli.index_docs  # noqa: F401
import unirag.cli.index_store  # noqa: F401
import unirag.cli.index_update  # noqa: F401
import unirag.cli.evaluate  # noqa: F401
import unirag.cli.onegen  # noqa: F401
import unirag.cli.onegen_train  # noqa: F401
import unirag.cli.rag  # noqa: F401
import unirag.cli.shard  # noqa: F401
from unirag.cli.common import click_exceptions, debug_enabled, err, known_errors
from unirag.cli.groups import app


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _say(markup: str, text: str) -> None:
    err.print(f"{markup} ", end="", highlight=False, markup=True)
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point. Bad input prints ``error: ...`` and exits 2; any other failure prints a one-line
    ``internal error`` and exits 1 (``--debug`` or ``UNIRAG_DEBUG=1`` adds the full traceback)."""
    mods = click_exceptions()
    no_args = tuple(m.NoArgsIsHelpError for m in mods if hasattr(m, "NoArgsIsHelpError"))
    import typer

    aborts = (typer.Abort, *(m.Abort for m in mods if hasattr(m, "Abort")))
    click_errors = tuple(m.ClickException for m in mods)
    try:
        rv = app(args=list(args) if args is not None else None, prog_name="unirag", standalone_mode=False)
    except no_args as exc:
        exc.show()
        sys.exit(2)
    except aborts:
        err.print("aborted", highlight=False)
        sys.exit(1)
    except known_errors() as exc:
        if debug_enabled():
            traceback.print_exc()
        msg = exc.format_message() if isinstance(exc, click_errors) else str(exc)
        if isinstance(exc, click_errors) and getattr(exc, "ctx", None) is not None:
            msg = f"{msg} (see `{exc.ctx.command_path} --help`)"
        _say("[bold red]error:[/]", _one_line(msg))
        sys.exit(2)
    except click_errors as exc:  # e.g. click.FileError
        _say("[bold red]error:[/]", _one_line(exc.format_message()))
        sys.exit(exc.exit_code or 1)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except Exception as exc:
        if debug_enabled():
            traceback.print_exc()
            sys.exit(1)
        _say("[bold red]internal error:[/]",
             f"{type(exc).__name__}: {_one_line(str(exc))}; run with --debug for the traceback")
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()

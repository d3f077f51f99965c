"""The ``unirag`` command: ``index build``, ``search``, ``ask``, ``eval ...``, ``train ...``."""

from __future__ import annotations

import sys

# Importing each module adds its commands to the shared groups.
import unirag.cli.core  # noqa: F401
import unirag.cli.eval_qa  # noqa: F401
import unirag.cli.evaluate  # noqa: F401
import unirag.cli.onegen  # noqa: F401
import unirag.cli.onegen_train  # noqa: F401
import unirag.cli.rag  # noqa: F401
from unirag.cli.common import err, known_errors
from unirag.cli.groups import app


def main() -> None:
    """Entry point: run the app; input errors print one line and exit with code 2."""
    try:
        app()
    except known_errors() as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        err.print(f"[bold red]error:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The ``unirag`` command: ``index build``, ``search``, ``ask``, ``eval ...``, ``train ...``."""

from __future__ import annotations

import importlib
import sys

from unirag.cli.common import err, known_errors
from unirag.cli.groups import app

# Each module adds its commands to the shared groups when imported.
_MODULES = ["unirag.cli.core", "unirag.cli.evaluate", "unirag.cli.onegen_train", "unirag.cli.onegen", "unirag.cli.rag"]
for _name in _MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:  # a feature module not present in this build
        if _exc.name != _name:
            raise


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

"""The ``unirag`` command line (typer): thin commands over the Python API."""

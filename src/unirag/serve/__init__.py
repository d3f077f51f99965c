"""HTTP server (FastAPI): ``/search`` and ``/ask`` over one index folder."""

from unirag.serve.app import create_app

__all__ = ["create_app"]

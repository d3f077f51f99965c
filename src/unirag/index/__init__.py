"""Vector index on FAISS: a factory string names the kind; ``add``, ``search``, ``save``, ``load``."""

from unirag.index.errors import IndexFormatError, IndexMismatchError
from unirag.index.folder import IndexFolder
from unirag.index.manifest import Manifest
from unirag.index.vector import Index

__all__ = ["Index", "IndexFolder", "IndexFormatError", "IndexMismatchError", "Manifest"]

"""Vector index on FAISS (a factory string names the kind) or an external store (a URI names it):
``add``, ``search``, ``reconstruct``, ``save``/``load``; ``open_index(folder_or_uri)`` opens either."""

from unirag.index.errors import IndexFormatError, IndexMismatchError
from unirag.index.folder import IndexFolder
from unirag.index.manifest import Manifest
from unirag.index.store import VectorIndex, create_store, export_store, is_store_uri, open_index, open_store
from unirag.index.vector import Index

__all__ = ["Index", "IndexFolder", "IndexFormatError", "IndexMismatchError", "Manifest", "VectorIndex",
           "create_store", "export_store", "is_store_uri", "open_index", "open_store"]

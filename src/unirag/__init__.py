"""unirag: retrieval-augmented generation, classic RAG and OneGen, offline on the Hugging Face stack.

Importing this package loads no heavy back end (torch, transformers, faiss): each sub-package
imports them inside the functions that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

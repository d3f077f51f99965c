"""Training: OneGen (``unirag.train.onegen``), RAG and DPR retrievers. Sub-modules import torch lazily."""

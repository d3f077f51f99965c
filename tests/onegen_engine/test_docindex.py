"""The OneGen document index: a unirag index folder whose vectors are the model's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tolerance import assert_f32_close, model_terms
from unirag.index.errors import IndexMismatchError
from unirag.onegen.docindex import OneGenIndex, embed_documents
from unirag.onegen.engine import split_lm


def test_folder_is_a_versioned_unirag_index(tiny_index_dir, tiny_index):
    manifest = json.loads((tiny_index_dir / "manifest.json").read_text())
    assert manifest["encoder"] == "tiny-onegen"
    assert manifest["encoder_info"]["kind"] == "onegen"
    assert manifest["count"] == manifest["corpus_count"] == 10
    assert "docs/docs.jsonl" in manifest["files"]
    assert tiny_index.store[3].title == "Jupiter"
    with pytest.raises(IndexMismatchError):
        OneGenIndex.load(tiny_index_dir, model_name="another-model")


def test_vectors_are_hidden_states_at_the_document_token(tiny_onegen, tiny_index):
    texts = [tiny_index.store[i].contents for i in (0, 5)]
    vecs = embed_documents(tiny_onegen, texts, batch_size=2)
    decoder, _ = split_lm(tiny_onegen.lm)
    for text, vec in zip(texts, vecs):
        ids = tiny_onegen.tokenizer(text, add_special_tokens=True)["input_ids"] + [tiny_onegen.document_token_id]
        with torch.inference_mode():
            h = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        # batched and padded against one unpadded row: the model path and the normalisation; unit vectors
        terms = model_terms(tiny_onegen.lm, len(ids), log_softmax=False) + h.shape[-1]
        assert_f32_close(vec, torch.nn.functional.normalize(h, dim=-1), terms)
    stored = tiny_index.index.reconstruct(np.array([0, 5]))
    assert_f32_close(stored, vecs, terms)     # indexed in other batches (other padding)


def test_search_ranks_self_first_and_excludes(tiny_index):
    vecs = tiny_index.index.reconstruct(np.arange(10))
    scores, rows = tiny_index.search(vecs, k=3)
    assert rows[:, 0].tolist() == list(range(10))
    assert np.all(np.diff(scores, axis=1) <= 0)     # faiss sorts the scores it computed: exact order
    _, rows = tiny_index.search(vecs[:1], k=3, exclude={0, int(rows[0, 1])})
    assert 0 not in rows[0].tolist() and len(set(rows[0].tolist())) == 3

"""The OneGen document index: a unirag index folder whose vectors are the model's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unirag.index.errors import IndexMismatchError
from unirag.onegen.docindex import embed_documents, open_onegen_index
from unirag.models.decoding import split_lm


def test_folder_is_a_versioned_unirag_index(tiny_index_dir, tiny_index, tiny_onegen, tmp_path, make_passages,
                                            tiny_encoder_dir):
    manifest = json.loads((tiny_index_dir / "manifest.json").read_text())
    assert manifest["encoder"] == "tiny-onegen"
    assert manifest["encoder_info"]["kind"] == "onegen"
    assert manifest["count"] == manifest["corpus_count"] == 10
    assert "docs/docs.jsonl" in manifest["files"]
    assert tiny_index.store[3].title == "Jupiter"
    with pytest.raises(IndexMismatchError, match="another-model"):
        open_onegen_index(tiny_index_dir, tiny_onegen, model_name="another-model")
    from unirag.retrieval import DenseRetriever, build_index

    with pytest.raises(IndexMismatchError, match="onegen engine"):  # no sentence encoder can query it
        DenseRetriever.load(tiny_index_dir)
    plain = build_index(make_passages(), tmp_path / "plain", encoder=str(tiny_encoder_dir), progress=False)
    with pytest.raises(IndexMismatchError, match="not of a OneGen model"):
        open_onegen_index(plain, tiny_onegen)


def test_vectors_are_hidden_states_at_the_document_token(tiny_onegen, tiny_index):
    texts = [tiny_index.store[i].contents for i in (0, 5)]
    vecs = embed_documents(tiny_onegen, texts, batch_size=2)
    decoder, _ = split_lm(tiny_onegen.lm)
    for text, vec in zip(texts, vecs):
        ids = tiny_onegen.tokenizer(text, add_special_tokens=True)["input_ids"] + [tiny_onegen.document_token_id]
        with torch.inference_mode():
            h = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        np.testing.assert_allclose(vec, torch.nn.functional.normalize(h, dim=-1).numpy(), atol=1e-5)
    stored = tiny_index.index.reconstruct(np.array([0, 5]))
    np.testing.assert_allclose(stored, vecs, atol=1e-5)


def test_search_ranks_self_first_and_excludes(tiny_index):
    vecs = tiny_index.index.reconstruct(np.arange(10))
    res = tiny_index.search_vectors(vecs, k=3)
    scores, rows = res.scores, res.rows
    assert rows[:, 0].tolist() == list(range(10))
    assert np.all(np.diff(scores, axis=1) <= 0)
    full = tiny_index.search_vectors(vecs[:1], k=5).rows[0].tolist()
    ex = tiny_index.search_vectors(vecs[:1], k=3, exclude=[{0, int(rows[0, 1])}]).rows[0].tolist()
    assert ex == [r for r in full if r not in (0, int(rows[0, 1]))][:3]  # the next best take their places


def test_query_vectors_match_the_engine(tiny_onegen, tiny_index):
    from unirag.models.decoding import Decoder
    from unirag.onegen.qa import qa_prompt
    from unirag.sampling_params import SamplingParams

    q = "Where is the Eiffel Tower?"
    via_search = tiny_index.embed_queries([q])[0]
    out = Decoder(tiny_onegen, tiny_index).generate(qa_prompt(tiny_onegen, q), SamplingParams(
        max_new_tokens=2, force_query_at=[0], keep_vectors=True, max_retrievals=1))[0]
    np.testing.assert_allclose(out.trace[0].vector, via_search, atol=1e-5)

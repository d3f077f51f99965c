"""The OneGen document index: a unirag index folder whose vectors are the model's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.tolerance import assert_f32_close, model_terms
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
        # batched and padded against one unpadded row: the model path and the normalisation; unit vectors
        terms = model_terms(tiny_onegen.lm, len(ids), log_softmax=False) + h.shape[-1]
        assert_f32_close(vec, torch.nn.functional.normalize(h, dim=-1), terms)
    stored = tiny_index.index.reconstruct(np.array([0, 5]))
    assert_f32_close(stored, vecs, terms)     # indexed in other batches (other padding)


def test_search_ranks_self_first_and_excludes(tiny_index):
    vecs = tiny_index.index.reconstruct(np.arange(10))
    res = tiny_index.search_vectors(vecs, k=3)
    scores, rows = res.scores, res.rows
    assert rows[:, 0].tolist() == list(range(10))
    assert np.all(np.diff(scores, axis=1) <= 0)     # faiss sorts the scores it computed: exact order
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
    # one prompt, two paths (a cached loop step vs one padded batch): float32 rounding of the model's sums
    seq = out.sequence[: out.trace[0].position + 1]
    assert_f32_close(out.trace[0].vector, via_search, model_terms(tiny_onegen.lm, len(seq), log_softmax=False))

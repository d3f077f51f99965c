"""The engine loop against clean full forwards on a tiny random model: query vectors, cache
consistency under ragged batched insertion, forward-call count, trace and streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tolerance import assert_f32_close, f32_tol, model_terms
from unirag.models.decoding import (DoneEvent, Decoder, RetrievalEvent, SamplingParams, TextEvent,
                                  decode, split_lm)

PROMPTS = ["Who painted the Mona Lisa and where?",
           "Tell me about rivers.",
           "The largest planet of the Solar System is a gas giant; which one is it, and who found its moons?"]


def _terms(model, sequence) -> int:
    """Accumulated terms of a unit query vector: the model path over the sequence and the normalisation."""
    return model_terms(model.lm, len(sequence), log_softmax=False) + model.lm.config.hidden_size


def clean_forward(model, ids):
    """Hidden states and logits of one full forward without cache or padding."""
    decoder, head = split_lm(model.lm)
    with torch.inference_mode():
        h = decoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
        return h, head(h).float()


def generated_positions(out, prompt_len):
    """Absolute position of each generated token in ``out.sequence``."""
    shift = {r.step: r.n_tokens for r in out.trace}
    pos, p = [], prompt_len
    for s in range(len(out.token_ids)):
        pos.append(p)
        p += 1 + shift.get(s, 0)
    return pos


def check_consistent(model, out, prompt_len, params):
    """The engine's query vectors and greedy tokens equal those of a clean forward."""
    h, logits = clean_forward(model, out.sequence)
    assert len(out.sequence) == prompt_len + len(out.token_ids) + sum(r.n_tokens for r in out.trace)
    for r in out.trace:
        assert out.sequence[r.position] == model.query_token_id
        ref = torch.nn.functional.normalize(h[r.position], dim=-1)
        assert_f32_close(r.vector, ref, _terms(model, out.sequence))   # KV-cached steps against one pass
    pos = generated_positions(out, prompt_len)
    for s, (t, p) in enumerate(zip(out.token_ids, pos)):
        assert out.sequence[p] == t
        if s in params.force_query_at:
            continue
        row = logits[p - 1].clone()
        if sum(r.step < s for r in out.trace) >= params.max_retrievals:
            row[model.query_token_id] = float("-inf")
        assert int(torch.argmax(row)) == t, f"step {s}"


def test_query_vector_and_cache_match_clean_forward(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=14, force_query_at=(1, 5, 9), max_retrievals=3, k=1,
                            keep_vectors=True)
    engine = Decoder(tiny_onegen, tiny_index)
    outs = engine.generate(PROMPTS, params)  # three rows, ragged prompts and passages
    lens = [len(p) for p in engine.encode(PROMPTS)]
    for out, n in zip(outs, lens):
        assert len(out.trace) == 3 and all(r.inserted for r in out.trace)
        check_consistent(tiny_onegen, out, n, params)
    # rows retrieved different passages of different lengths: the insertion really was ragged
    assert len({sum(r.n_tokens for r in o.trace) for o in outs}) > 1


def test_batched_equals_one_by_one(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=10, force_query_at=(0, 4), max_retrievals=2, k=2)
    engine = Decoder(tiny_onegen, tiny_index)
    batch = engine.generate(PROMPTS, params)
    for i, p in enumerate(PROMPTS):
        single = engine.generate(p, params)[0]
        assert single.token_ids == batch[i].token_ids
        assert single.sources == batch[i].sources


def test_passages_retrieved_at_one_step_prefill_in_one_forward(tiny_onegen, tiny_index):
    """Rows retrieving at the same step prefill their passages together (one forward of several
    rows, several tokens each; ``group_prefill=10`` so that the tiny index's passages of unequal
    lengths group), with the tokens and sources of each row decoded alone and of the row-by-row
    prefill."""
    from unirag.models.decoding import split_lm

    params = SamplingParams(max_new_tokens=10, force_query_at=(0, 4), max_retrievals=2, k=1)
    decoder, _ = split_lm(tiny_onegen.lm)
    shapes = []
    hook = decoder.register_forward_hook(lambda m, a, kw, out: shapes.append(tuple(kw["input_ids"].shape)),
                                         with_kwargs=True)
    try:
        grouped = Decoder(tiny_onegen, tiny_index, group_prefill=10).generate(PROMPTS, params)
        seen, shapes[:] = list(shapes), []
        apart = Decoder(tiny_onegen, tiny_index, group_prefill=0).generate(PROMPTS, params)
        seen_apart = list(shapes)
    finally:
        hook.remove()
    assert any(b == len(PROMPTS) and t > 1 for b, t in seen[1:]), seen       # one passage forward for all rows
    assert all(b == 1 for b, t in seen_apart if t > 1), seen_apart           # each prefill alone
    assert len(seen) < len(seen_apart)
    for i, p in enumerate(PROMPTS):
        single = Decoder(tiny_onegen, tiny_index).generate(p, params)[0]
        assert grouped[i].token_ids == apart[i].token_ids == single.token_ids
        assert grouped[i].sources == apart[i].sources == single.sources


def test_rows_admitted_into_a_running_batch_equal_one_by_one(tiny_onegen, tiny_index):
    """Continuous batching: prompts that join at steps 2 and 5 (prefilling while the first row
    decodes, then retrieving at their own steps) give the tokens and sources of single decoding."""
    params = SamplingParams(max_new_tokens=10, force_query_at=(0, 4), max_retrievals=2, k=1)
    engine = Decoder(tiny_onegen, tiny_index)
    ids = engine.encode(PROMPTS)
    arrivals = {2: [1], 5: [2]}  # step -> prompts that arrive then
    step = {"n": 0}

    def admit():
        step["n"] += 1
        return [(ids[j], params) for j in arrivals.get(step["n"] - 1, [])]

    events = list(engine.stream([ids[0]], params, admit=admit))
    done = {e.index: e.output for e in events if isinstance(e, DoneEvent)}
    assert sorted(done) == [0, 1, 2]
    first_text = {}
    for pos, e in enumerate(events):
        if isinstance(e, TextEvent):
            first_text.setdefault(e.index, pos)
    assert first_text[0] < first_text[1] < first_text[2]  # row 0 was already decoding when 1 and 2 joined
    for i, p in enumerate(PROMPTS):
        single = engine.generate(p, params)[0]
        assert done[i].token_ids == single.token_ids
        assert done[i].sources == single.sources


def test_a_row_admitted_after_every_row_ended_starts_a_fresh_cache(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=6, force_query_at=(1,), max_retrievals=1, k=1)
    engine = Decoder(tiny_onegen, tiny_index)
    ids = engine.encode(PROMPTS)
    seen: list = []
    sent = {"late": False}

    def admit():
        if not sent["late"] and any(isinstance(e, DoneEvent) for e in seen):
            sent["late"] = True
            return [(ids[2], params)]
        return []

    for e in engine.stream([ids[0]], params, admit=admit):
        seen.append(e)
    done = {e.index: e.output for e in seen if isinstance(e, DoneEvent)}
    assert sorted(done) == [0, 1]
    assert done[1].token_ids == engine.generate(PROMPTS[2], params)[0].token_ids


def count_forwards(model, fn):
    decoder, _ = split_lm(model.lm)
    calls = []
    handle = decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        result = fn()
    finally:
        handle.remove()
    return len(calls), result


def test_retrieval_adds_only_the_passage_prefill(tiny_onegen, tiny_index):
    n = 12
    forced = SamplingParams(max_new_tokens=n, force_query_at=(2, 6), max_retrievals=2)
    with_index, out = count_forwards(tiny_onegen, lambda: Decoder(tiny_onegen, tiny_index).generate(PROMPTS[0], forced)[0])
    without, plain = count_forwards(tiny_onegen, lambda: Decoder(tiny_onegen, None).generate(PROMPTS[0], forced)[0])
    assert len(out.token_ids) == len(plain.token_ids) == n
    assert len(out.trace) == 2
    # plain decoding: one prompt prefill + one forward per generated token but the last
    assert without == n
    # retrieval: the query vector comes from the step that consumed [RQ]; one prefill per passage
    assert with_index == without + len(out.trace)


def test_threshold_refuses_and_decoding_continues(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=8, force_query_at=(1,), threshold=1.5, keep_vectors=True)
    forwards, out = count_forwards(tiny_onegen, lambda: Decoder(tiny_onegen, tiny_index).generate(PROMPTS[1], params)[0])
    assert len(out.trace) == 1 and out.trace[0].inserted == [] and out.trace[0].ids
    assert forwards == 8
    check_consistent(tiny_onegen, out, len(Decoder(tiny_onegen).encode(PROMPTS[1])[0]), params)


def test_retrieve_prob_emits_the_query_token_above_the_threshold(tiny_onegen, tiny_index):
    engine = Decoder(tiny_onegen, tiny_index)
    always = engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, retrieve_prob=0.0, max_retrievals=2))[0]
    assert [r.step for r in always.trace] == [0, 1]  # every step qualifies until the budget is spent
    forced = engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, force_query_at=(0, 1), max_retrievals=2))[0]
    assert always.token_ids == forced.token_ids and always.sources == forced.sources
    never = engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, retrieve_prob=1.01))[0]
    plain = engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8))[0]
    assert never.token_ids == plain.token_ids
    assert engine.model.query_token_id not in Decoder(tiny_onegen).generate(
        PROMPTS[0], SamplingParams(max_new_tokens=8, retrieve_prob=0.0))[0].token_ids  # no index: no query


def test_never_reinserts_a_passage(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=12, force_query_at=tuple(range(0, 12, 2)), max_retrievals=5, k=1)
    out = Decoder(tiny_onegen, tiny_index).generate(PROMPTS[0], params)[0]
    assert len(out.trace) == 5
    assert len(set(out.sources)) == 5
    assert all(out.trace[i].ids[0] == out.trace[i].inserted[0] for i in range(5))
    scores = out.trace[0].scores
    assert scores == sorted(scores, reverse=True)


def test_stream_events_match_outputs(tiny_onegen, tiny_index):
    params = SamplingParams(max_new_tokens=9, force_query_at=(3,), max_retrievals=1)
    engine = Decoder(tiny_onegen, tiny_index)
    events = list(engine.stream(PROMPTS[:2], params))
    done = {e.index: e.output for e in events if isinstance(e, DoneEvent)}
    assert sorted(done) == [0, 1]
    for i in (0, 1):
        text = "".join(e.text for e in events if isinstance(e, TextEvent) and e.index == i)
        assert text == done[i].text
        rets = [e for e in events if isinstance(e, RetrievalEvent) and e.index == i]
        assert [e.retrieval for e in rets] == done[i].trace
        assert [p.id for p in rets[0].passages] == done[i].sources


def test_sampling_is_seeded(tiny_onegen, tiny_index):
    engine = Decoder(tiny_onegen, tiny_index)
    p = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=50, seed=3, force_query_at=(2,))
    a, b = engine.generate(PROMPTS, p), engine.generate(PROMPTS, p)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    c = engine.generate(PROMPTS, SamplingParams(**{**p.__dict__, "seed": 4}))
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_swap_index_changes_knowledge(tiny_onegen, tiny_index_dir, tmp_path, make_passages):
    from unirag.onegen.docindex import build_onegen_index, open_onegen_index

    other = build_onegen_index(make_passages("x")[:4], tmp_path / "other", tiny_onegen, progress=False)
    retriever = open_onegen_index(tiny_index_dir, tiny_onegen)
    engine = Decoder(tiny_onegen, retriever)
    params = SamplingParams(max_new_tokens=4, force_query_at=(0,))
    assert engine.generate(PROMPTS[0], params)[0].sources[0].startswith("d")
    retriever.swap_index(other)
    assert engine.generate(PROMPTS[0], params)[0].sources[0].startswith("x")


def test_decode_stops_on_eos(tiny_onegen):
    # make EOS the most likely token after any input by biasing the head
    _, head = split_lm(tiny_onegen.lm)
    eos = tiny_onegen.tokenizer.eos_token_id
    saved = head.weight.data[eos].clone()
    try:
        head.weight.data[eos] = head.weight.data.sum(0)
        events = list(decode(tiny_onegen, None, [[5, 6, 7]], SamplingParams(max_new_tokens=5)))
    finally:
        head.weight.data[eos] = saved
    out = events[-1].output
    assert out.finish_reason in ("stop", "length")
    if out.finish_reason == "stop":
        assert out.token_ids[-1] == eos


def test_rows_retrieving_at_different_steps(tiny_onegen, tiny_index):
    """Per-row parameters: rows insert passages at different steps (decoding rows run beside the
    prefill on their own sub-cache); every row still matches a clean forward and its solo run."""
    per_row = [SamplingParams(max_new_tokens=12, force_query_at=(1, 7), max_retrievals=2, keep_vectors=True),
               SamplingParams(max_new_tokens=9, force_query_at=(4,), max_retrievals=1, keep_vectors=True, k=2),
               SamplingParams(max_new_tokens=11, max_retrievals=0, keep_vectors=True)]
    engine = Decoder(tiny_onegen, tiny_index)
    decoder, _ = split_lm(tiny_onegen.lm)
    calls = []
    handle = decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        outs = engine.generate(PROMPTS, per_row)
    finally:
        handle.remove()
    lens = [len(p) for p in engine.encode(PROMPTS)]
    assert [len(o.trace) for o in outs] == [2, 1, 0]
    assert [len(o.token_ids) for o in outs] == [12, 9, 11]
    for out, n, p in zip(outs, lens, per_row):
        check_consistent(tiny_onegen, out, n, p)
        assert engine.generate(PROMPTS[out.index], p)[0].token_ids == out.token_ids
    # lockstep iterations = the longest row's own forwards (12 + 2 prefills); 3 steps had a split;
    # the first step prefills the three prompts one by one (2 more forwards)
    assert len(calls) == 14 + 3 + 2


def test_peft_wrapped_model_matches_its_own_forward(tiny_llama_dir, tiny_index):
    """A LoRA-wrapped LM (non-zero adapters): the engine's decoder/head split gives the hidden
    states and greedy tokens of the peft model's own full forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaForCausalLM

    from unirag.onegen.config import OneGenConfig
    from unirag.models.decoding import EngineModel
    from unirag.onegen.tokens import add_special_tokens

    torch.manual_seed(1)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    ids = add_special_tokens(base, tok, OneGenConfig())
    lm = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    model = EngineModel(lm, tok, ids["query"], "<passage>", "</passage>")
    params = SamplingParams(max_new_tokens=8, force_query_at=(2,), max_retrievals=1, keep_vectors=True)
    out = Decoder(model, tiny_index).generate(PROMPTS[0], params)[0]
    with torch.inference_mode():
        full = lm(input_ids=torch.tensor([out.sequence]), output_hidden_states=True)
    h, logits = full.hidden_states[-1][0], full.logits[0]
    r = out.trace[0]
    assert_f32_close(r.vector, torch.nn.functional.normalize(h[r.position], dim=-1), _terms(model, out.sequence) + 8 * 4)
    n = len(Decoder(model).encode(PROMPTS[0])[0])
    for s, (t, p) in enumerate(zip(out.token_ids, generated_positions(out, n))):
        if s != 2:
            row = logits[p - 1].clone()
            if s > 2:
                row[model.query_token_id] = float("-inf")
            assert int(torch.argmax(row)) == t
    with lm.disable_adapter():  # the adapters are really on the engine's path
        other = Decoder(model, tiny_index).generate(PROMPTS[0], params)[0]
    # far beyond float32 rounding: the adapters change the vector
    assert np.abs(other.trace[0].vector - r.vector).max() > 100 * f32_tol(1.0, _terms(model, out.sequence) + 8 * 4)

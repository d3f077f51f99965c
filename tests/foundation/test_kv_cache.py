"""The in-place KV cache: appends write into spare room (no copy of the cache per step), hold exactly
what concatenation holds, survive keys replaced from outside, and decode like transformers' own cache."""

from __future__ import annotations

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from tests.tolerance import assert_f32_close, model_terms
from unirag.models.kv_cache import ROOM, growing_layer_class, new_cache


def _kv(b: int, t: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, t, 4, generator=g), torch.randn(b, 2, t, 4, generator=g)


def test_appends_equal_concatenation_and_reuse_the_buffer():
    layer = growing_layer_class()()
    k, v = _kv(3, 5, 0)
    layer.update(k, v)
    ptr = layer.keys.data_ptr()
    want_k, want_v = k, v
    for step in range(ROOM):  # every one-token append fits in the room left by the first update
        nk, nv = _kv(3, 1, step + 1)
        got_k, got_v = layer.update(nk, nv)
        want_k, want_v = torch.cat([want_k, nk], -2), torch.cat([want_v, nv], -2)
        assert torch.equal(got_k, want_k) and torch.equal(got_v, want_v)
        assert layer.keys.data_ptr() == ptr, f"step {step}: the cache moved, so it was copied"
    assert layer.get_seq_length() == 5 + ROOM
    layer.update(*_kv(3, 1, 999))  # past the room: one move into a larger buffer, content kept
    assert layer.keys.data_ptr() != ptr
    assert torch.equal(layer.keys[:, :, :-1], want_k)


def test_keys_replaced_from_outside_are_adopted():
    layer = growing_layer_class()()
    k, v = _kv(4, 6, 0)
    layer.update(k, v)
    layer.batch_select_indices(torch.tensor([3, 1]))  # transformers' row selection reassigns keys
    nk, nv = _kv(2, 1, 1)
    got_k, got_v = layer.update(nk, nv)
    assert torch.equal(got_k, torch.cat([k[[3, 1]], nk], -2))
    assert torch.equal(got_v, torch.cat([v[[3, 1]], nv], -2))
    live = torch.tensor([True, False] * 3 + [True])  # a column drop, as the decoding loop does
    layer.keys, layer.values = layer.keys[:, :, live], layer.values[:, :, live]
    nk2, nv2 = _kv(2, 2, 2)
    got_k, _ = layer.update(nk2, nv2)
    assert torch.equal(got_k, torch.cat([torch.cat([k[[3, 1]], nk], -2)[:, :, live], nk2], -2))


def test_new_cache_decodes_like_the_dynamic_cache():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (2, 9))
    outs = []
    for cache in (DynamicCache(config=cfg), new_cache(cfg)):
        logits = []
        with torch.inference_mode():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            nxt = out.logits[:, -1:].argmax(-1)
            for _ in range(6):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                logits.append(out.logits[:, -1])
                nxt = out.logits[:, -1:].argmax(-1)
        outs.append(torch.stack(logits))
        assert cache.get_seq_length() == 15
    assert_f32_close(outs[1], outs[0], n_terms=model_terms(model, 15, log_softmax=False))
    filled = new_cache(cfg, [_kv(1, 3, 0), _kv(1, 3, 1)])
    assert filled.get_seq_length() == 3 and torch.equal(filled.layers[1].keys, _kv(1, 3, 1)[0])

"""A KV cache that appends in place: each layer's keys and values are views of buffers with room
to spare on the sequence axis, so a decoding step writes its one new column instead of copying the
whole cache (transformers' ``DynamicLayer`` concatenates: 30% of a one-off CPU profile of a SmolLM2
step of 8 rows after 412-token prompts; ``bench/bench_decode.py`` measures such a step 1.23x faster
with this cache).

The views are ordinary tensors to everything that reads them. Code that replaces a layer's
``keys``/``values`` (row selection, column gathers, merges) keeps working: the next append sees
that the tensor is no longer its view and moves it into a new buffer once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

ROOM = 64  # columns of spare room at least (and half the length, for long caches)


def _room(length: int) -> int:
    """Columns to allocate for a cache of ``length``: the length and its spare room."""
    return length + max(ROOM, length // 2)


def growing_layer_class() -> type:
    """The layer class (built on first use, so importing this module needs no torch)."""
    global _GrowingLayer
    if _GrowingLayer is None:
        import torch
        from transformers.cache_utils import DynamicLayer

        class GrowingLayer(DynamicLayer):
            """A ``DynamicLayer`` whose ``keys``/``values`` live in buffers with spare columns."""

            _kbuf: Any = None
            _vbuf: Any = None
            _kview: Any = None  # the keys view last handed out

            def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                n = self.keys.shape[-2] if self.keys.dim() == 4 else 0
                end = n + key_states.shape[-2]
                if (self._kbuf is None or self.keys is not self._kview or end > self._kbuf.shape[-2]
                        or self._kbuf.shape[:2] != key_states.shape[:2]):
                    self._kbuf = self._move(self.keys, key_states, n, end)
                    self._vbuf = self._move(self.values, value_states, n, end)
                self._kbuf[:, :, n:end] = key_states
                self._vbuf[:, :, n:end] = value_states
                self.keys, self.values = self._kbuf[:, :, :end], self._vbuf[:, :, :end]
                self._kview = self.keys
                return self.keys, self.values

            @staticmethod
            def _move(old: Any, new: Any, n: int, end: int) -> Any:
                b, h, _, d = new.shape
                buf = torch.empty((b, h, _room(end), d), dtype=new.dtype, device=new.device)
                if n:
                    buf[:, :, :n] = old
                return buf

        _GrowingLayer = GrowingLayer
    return _GrowingLayer


_GrowingLayer: type | None = None


def new_cache(config: Any, data: Iterable[tuple[Any, Any]] | None = None) -> Any:
    """A ``DynamicCache`` for a model of ``config`` whose full-attention layers append in place,
    filled with ``data`` (``(keys, values)`` per layer) when given. Sliding-window and other
    layer kinds stay as transformers makes them."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    layer = growing_layer_class()
    cache.layers = [layer() if type(lay) is DynamicLayer else lay for lay in cache.layers]
    for lay, (keys, values) in zip(cache.layers, data or ()):
        lay.update(keys, values)
    return cache

"""Tolerances for comparing two float32 computations of the same quantity.

Many tests compare two ways of computing one value (a lean pass against a full one, a shared prefix
against a plain pass, an index against a matmul).  In exact arithmetic they are equal; in float32
they differ only because the operations are ordered differently (another BLAS kernel or blocking for
another shape or CPU, a fused against an unfused reduction).  The tolerance therefore follows from
float32 itself, not from what one machine happens to produce:

* every float32 rounding is a relative error of at most ``u = eps32 / 2`` (``eps32 = 2**-23 ≈ 1.19e-7``);
* a sum of ``n`` terms accumulated in any order is off by at most ``(n - 1) u · Σ|x_i|`` in the worst
  case, and, since rounding errors are independent with mean zero, by ``λ sqrt(n) u · Σ|x_i|`` with
  probability at least ``1 - 2 exp(-λ²/2)`` (Higham & Mary, "A new approach to probabilistic rounding
  error analysis", SISC 2019).  ``λ = 5`` leaves about 1 in 270,000 per compared value;
* two computations of the same value each carry such an error, so they differ by at most twice it:
  ``2 λ sqrt(n) u · M = λ sqrt(n) eps32 · M``.

``magnitude`` (``M``) is the scale of the accumulated terms: for the values compared here (log-probs,
logits, embeddings, gradients) the largest absolute value of the reference result, taken over the whole
tensor and not per element, because an element that cancels to ~0 still carries the rounding error of
the large terms it was summed from.  Hence the tests use ``rtol=0`` with this ``atol``.
``n_terms`` is the number of accumulated terms on the path the two computations may order differently:
for a network, the sum of the reduction lengths (hidden width, FFN width, attention span, vocabulary for
a log-softmax) of the layers the value passes through.  ``transformer_terms`` / ``model_terms`` count
them for the tiny test models.

A real bug (a position off by one, a wrong marginal, the wrong document) changes values by a fraction of
their magnitude, i.e. by orders of magnitude more than these tolerances.
"""

from __future__ import annotations

import math

EPS32 = 2.0**-23                     # float32 machine epsilon, 1.1920929e-07
LAMBDA = 5.0                         # probabilistic bound: failure probability 2 exp(-λ²/2) ≈ 7.5e-6


def f32_tol(magnitude: float, n_terms: int, *, worst_case: bool = False) -> float:
    """Absolute tolerance between two float32 computations of values of scale ``magnitude`` that
    accumulate ``n_terms`` terms each: ``λ sqrt(n) eps32 M`` (probabilistic) or ``2 n u M = n eps32 M``
    (``worst_case``, for short sums where sqrt(n) is not yet a good estimate)."""
    n = max(int(n_terms), 1)
    growth = n if worst_case else LAMBDA * math.sqrt(n)
    return growth * EPS32 * float(magnitude)


def transformer_terms(hidden: int, ffn: int, layers: int, span: int, *, cross: bool = False, head: bool = False,
                      log_softmax: int = 0) -> int:
    """Accumulated terms along one value's path through ``layers`` transformer blocks: per block the
    q/k/v projections (``3 hidden``), the attention scores (``hidden`` over all heads) and the softmax
    and weighted sum over the attended positions (``2 span``), the output projection (``hidden``), the
    two FFN matmuls (``hidden + ffn``) and two normalisations (``2 hidden``); ``cross`` adds a
    cross-attention per block, ``head`` the LM head (``hidden``), ``log_softmax`` a log-softmax over
    that many vocabulary entries."""
    attention = 4 * hidden + 2 * span
    block = attention * (2 if cross else 1) + hidden + ffn + 2 * hidden
    return layers * block + (hidden if head else 0) + log_softmax


def model_terms(model, span: int, log_softmax: bool = True) -> int:
    """``transformer_terms`` for a tiny test model (a BART-like seq2seq or a Llama-like causal LM):
    the whole path from the input ids to the logits (``log_softmax=False``) or the log-probs."""
    c = model.config
    vocab = c.vocab_size if log_softmax else 0
    if c.is_encoder_decoder:
        enc = transformer_terms(c.d_model, c.encoder_ffn_dim, c.encoder_layers, span)
        return enc + transformer_terms(c.d_model, c.decoder_ffn_dim, c.decoder_layers, span, cross=True, head=True,
                                       log_softmax=vocab)
    return transformer_terms(c.hidden_size, c.intermediate_size, c.num_hidden_layers, span, head=True,
                             log_softmax=vocab)


def max_abs(x) -> float:
    """The magnitude of a tensor or array: its largest absolute value (1 for an all-zero one)."""
    m = float(abs(x.detach() if hasattr(x, "detach") else x).max())
    return m if m > 0 else 1.0


def assert_f32_close(got, want, n_terms: int, magnitude: float | None = None, *, worst_case: bool = False) -> None:
    """``got`` equals ``want`` up to the float32 rounding of ``n_terms`` accumulated terms at the scale
    ``magnitude`` (default: the largest ``|want|``).  Tensors, arrays and numbers; ``rtol=0`` because
    that scale, not each element, sets the error (see the module docstring)."""
    import torch

    got, want = torch.as_tensor(got), torch.as_tensor(want)
    scale = max_abs(want) if magnitude is None else float(magnitude)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=0,
                               atol=f32_tol(scale, n_terms, worst_case=worst_case), check_device=False)

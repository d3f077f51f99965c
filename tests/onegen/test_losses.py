"""The vectorised contrastive losses equal loop references, and their gradients are finite."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.onegen.reference import ref_bpr, ref_infonce
from tests.tolerance import assert_f32_close
from unirag.onegen.losses import bpr_loss, contrastive_loss, infonce_loss


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(5, 16, generator=g), dim=-1)
    d = F.normalize(torch.randn(9, 16, generator=g), dim=-1)
    pos = torch.zeros(5, 9, dtype=torch.bool)
    neg = torch.zeros(5, 9, dtype=torch.bool)
    cand = torch.ones(5, 9, dtype=torch.bool)
    pos[0, 0] = pos[1, 1] = pos[2, 2] = pos[2, 3] = pos[3, 4] = pos[4, 5] = True
    neg[0, 6] = neg[1, 7] = neg[1, 8] = neg[2, 0] = True  # row 3, 4: no hard negatives
    cand[4, :4] = False  # retrieval 4 is a mention: only docs 4.. are entities
    return q, d, pos, neg, cand


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bpr_equals_reference(seed):
    q, d, pos, neg, cand = _case(seed)
    # cosines over 16 dims, a difference, log-sigmoid, a mean over <= 9 pairs; terms of size <= 2
    want = ref_bpr(q, d, pos, neg, cand)
    assert_f32_close(bpr_loss(q, d, pos, neg, cand), want, 16 + 9, magnitude=max(abs(want), 2.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [0.05, 1.0])
def test_infonce_equals_reference(seed, t):
    q, d, pos, neg, cand = _case(seed)
    # cosines over 16 dims scaled by 1 / t, a logsumexp over 9 documents, a mean over <= 6 pairs
    want = ref_infonce(q, d, pos, neg, cand, t)
    assert_f32_close(infonce_loss(q, d, pos, neg, cand, t), want, 16 + 9 + 6, magnitude=max(abs(want), 1 / t))


def test_perfect_retrieval_has_low_infonce():
    d = torch.eye(4)
    q = d.clone()
    pos = torch.eye(4, dtype=torch.bool)
    none = torch.zeros(4, 4, dtype=torch.bool)
    cand = torch.ones(4, 4, dtype=torch.bool)
    # exactly log(1 + 3 exp(-20)) per row; the logits are of size 1 / 0.05 = 20
    assert_f32_close(infonce_loss(q, d, pos, none, cand, 0.05), math.log1p(3 * math.exp(-20)), 4 + 4, magnitude=20)
    assert float(infonce_loss(q, d.flip(0), pos, none, cand, 0.05)) > 10


def test_no_pairs_gives_zero_with_grad():
    q = torch.randn(2, 4, requires_grad=True)
    d = torch.randn(3, 4)
    pos = torch.zeros(2, 3, dtype=torch.bool)
    loss = contrastive_loss(q, d, pos, pos, pos, kind="bpr")
    loss.backward()
    assert float(loss.detach()) == 0.0 and q.grad is not None


def test_unknown_kind():
    q = torch.randn(1, 4)
    m = torch.ones(1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="unknown contrastive loss"):
        contrastive_loss(q, q, m, m, m, kind="triplet")  # type: ignore[arg-type]

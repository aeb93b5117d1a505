"""Shared layers: candidate grouping (layouts, pad/unpad round trip, stride-0 rows), masked
softmax and mean on empty sets (no NaN, zero gradients), the cross layer and the FLOP helpers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker.layers import (
    CandidateGrouping,
    CrossLayer,
    make_mlp,
    masked_mean,
    masked_softmax,
    mlp_flops,
)


def test_grouping_example_from_the_docstring() -> None:
    g = CandidateGrouping.build(torch.tensor([1, 0, 1]), num_requests=2, num_candidates=3)
    assert g.slot is not None and g.slot.tolist() == [0, 0, 1]
    assert g.max_per_request == 2
    x = torch.tensor([[10.0], [20.0], [30.0]])
    assert g.pad(x).squeeze(-1).tolist() == [[20.0, 0.0], [10.0, 30.0]]
    assert torch.equal(g.unpad(g.pad(x)), x)
    assert g.rows(torch.tensor([[1.0], [2.0]])).squeeze(-1).tolist() == [2.0, 1.0, 2.0]


def test_one_request_layout_is_views_only() -> None:
    g = CandidateGrouping.build(None, num_requests=1, num_candidates=5)
    user = torch.randn(1, 7)
    rows = g.rows(user)
    assert rows.shape == (5, 7) and rows.stride(0) == 0
    assert rows.data_ptr() == user.data_ptr()
    x = torch.randn(5, 3)
    assert g.pad(x).shape == (1, 5, 3) and g.pad(x).data_ptr() == x.data_ptr()
    assert g.unpad(g.pad(x)).data_ptr() == x.data_ptr()


def test_identity_layout_is_detected_and_copies_nothing() -> None:
    g = CandidateGrouping.build(torch.arange(4), num_requests=4, num_candidates=4)
    assert g.identity and g.max_per_request == 1
    x = torch.randn(4, 2)
    assert g.rows(x) is x and g.pad(x).shape == (4, 1, 2)
    not_identity = CandidateGrouping.build(torch.tensor([1, 0, 2, 3]), 4, 4)
    assert not not_identity.identity


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=0, max_size=20))
def test_pad_then_unpad_is_the_identity_and_pads_per_request(index: list[int]) -> None:
    ri = torch.tensor(index, dtype=torch.int64)
    g = CandidateGrouping.build(ri, num_requests=5, num_candidates=len(index))
    x = torch.arange(len(index) * 2, dtype=torch.float32).view(-1, 2) + 1
    padded = g.pad(x)
    assert padded.shape[:2] == (5, max([index.count(r) for r in range(5)], default=0))
    assert torch.equal(g.unpad(padded), x)
    for r in range(5):  # request r's row holds its candidates in their order, then zeros
        mine = x[ri == r]
        assert torch.equal(padded[r, : len(mine)], mine)
        assert padded[r, len(mine) :].abs().sum() == 0


def test_masked_softmax_and_mean_on_an_empty_set_give_zeros_not_nan() -> None:
    scores = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.isfinite(w).all()
    assert w[1].abs().sum() == 0 and w[0, 1] == 0 and w[0, 3] == 0
    torch.testing.assert_close(w[0, [0, 2]], torch.softmax(scores[0, [0, 2]], 0))
    (w * torch.randn(2, 4)).sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    assert scores.grad[1].abs().sum() == 0

    x = torch.randn(2, 4, 3)
    m = masked_mean(x, mask)
    torch.testing.assert_close(m[0], x[0, [0, 2]].mean(0))
    assert m[1].abs().sum() == 0


def test_cross_layer_matches_the_dcnv2_formula() -> None:
    torch.manual_seed(0)
    layer = CrossLayer(6, 2)
    x0, x = torch.randn(3, 6), torch.randn(3, 6)
    assert layer.v is not None
    expected = x0 * (layer.u(layer.v(x))) + x
    torch.testing.assert_close(layer(x0, x), expected)
    first = CrossLayer(6, 2, project=False)
    assert first.v is None
    vx = torch.randn(3, 2)
    torch.testing.assert_close(first(x0, x0, vx), x0 * first.u(vx) + x0)
    assert layer.flops(3) == 2 * 3 * 6 * 2 * 2 and first.flops(3) == 2 * 3 * 2 * 6


def test_make_mlp_shapes_and_flops() -> None:
    mlp = make_mlp(5, (4, 3), activate_last=False)
    out = mlp(torch.full((2, 5), -10.0))
    assert out.shape == (2, 3)
    assert mlp_flops(2, 5, (4, 3)) == 2 * 2 * (5 * 4 + 4 * 3)
    assert isinstance(make_mlp(5, ()), torch.nn.Identity)
    relu_last = make_mlp(5, (3,))
    assert (relu_last(torch.randn(10, 5)) >= 0).all()


@pytest.mark.parametrize("n", [0, 1])
def test_grouping_of_tiny_batches(n: int) -> None:
    g = CandidateGrouping.build(torch.zeros(n, dtype=torch.int64), num_requests=2, num_candidates=n)
    x = torch.ones(n, 3)
    assert g.unpad(g.pad(x)).shape == (n, 3)

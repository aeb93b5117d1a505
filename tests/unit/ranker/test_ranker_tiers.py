"""The three tiers: request-centric logits equal the per-candidate oracle (several requests,
any order, cold start), the request side runs once per request and never in ``score``, request
tensors reach candidates as stride-0 views and never as per-candidate copies, gradients reach the
inputs, FLOP estimates match torch's counter, and bad inputs name the field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from adrank.errors import EXIT_USAGE, InputError
from ranker.base import RankerTier, TierDims, TierName
from ranker.inputs import CandidateInputs
from ranker.large import DcnAttentionTier
from ranker.medium import DlrmTier
from ranker.small import TwoTowerTier
from ranker.tiers import TIER_CLASSES, build_tier
from tests.unit.ranker.ranker_fixtures import DIMS, make_candidates, make_requests

TIERS = list(TierName)


def _tier(name: TierName, seed: int = 0) -> RankerTier[Any]:
    torch.manual_seed(seed)
    return build_tier(name, DIMS)


class _Recorder(TorchFunctionMode):
    """Records every tensor passed to, and returned by, a torch function (attribute reads such
    as ``.dtype`` left out: they compute nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.args: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "__get__":
            return out
        flat, _ = tree_flatten((args, kwargs or {}))
        self.args.extend(t for t in flat if isinstance(t, torch.Tensor))
        flat_out, _ = tree_flatten(out)
        self.outputs.extend(t for t in flat_out if isinstance(t, torch.Tensor))
        return out


def _state_tensors(state: Any) -> list[torch.Tensor]:
    return [
        getattr(state, f.name)
        for f in dataclasses.fields(state)
        if isinstance(getattr(state, f.name), torch.Tensor)
    ]


def test_build_tier_gives_each_class() -> None:
    assert isinstance(build_tier(TierName.SMALL, DIMS), TwoTowerTier)
    assert isinstance(build_tier(TierName.MEDIUM, DIMS), DlrmTier)
    assert isinstance(build_tier(TierName.LARGE, DIMS), DcnAttentionTier)
    assert all(cls.name is name for name, cls in TIER_CLASSES.items())


@pytest.mark.parametrize("name", TIERS)
def test_request_centric_equals_per_candidate_over_several_requests(name: TierName) -> None:
    tier = _tier(name)
    # Four requests, one a cold start (no items), candidates interleaved and unevenly spread;
    # request 3 has none.
    req = make_requests([5, 0, 9, 2], seq_len=9)
    cand = make_candidates(8, [2, 0, 1, 1, 0, 2, 2, 1])
    logits = tier(req, cand)
    assert logits.shape == (8,)
    assert not torch.isnan(logits).any()
    torch.testing.assert_close(logits, tier.score_per_candidate(req, cand), rtol=1e-5, atol=1e-5)
    # Each candidate's logit is the one it gets alone with its request (nothing leaks across).
    for i, r in enumerate([2, 0, 1, 1, 0, 2, 2, 1]):
        alone = tier(
            req.take(torch.tensor([r])),
            CandidateInputs(cand.pooled[i : i + 1], cand.dense[i : i + 1]),
        )
        torch.testing.assert_close(alone[0], logits[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TIERS)
@pytest.mark.parametrize("items", [0, 7])
def test_one_request_equals_per_candidate_and_cold_start_is_finite(
    name: TierName, items: int
) -> None:
    tier = _tier(name)
    req = make_requests([items], seq_len=7)
    cand = make_candidates(30, None)
    logits = tier(req, cand)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, tier.score_per_candidate(req, cand), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TIERS)
def test_empty_sequence_dimension_and_no_candidates(name: TierName) -> None:
    tier = _tier(name)
    req = make_requests([0, 0], seq_len=0)  # L = 0: no request has a history
    cand = make_candidates(3, [1, 1, 0])
    assert torch.isfinite(tier(req, cand)).all()
    none = tier(req, make_candidates(0, []))
    assert none.shape == (0,)


@settings(max_examples=12, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    data=st.data(),
)
def test_any_grouping_matches_the_oracle(lengths: list[int], data: st.DataObject) -> None:
    index = data.draw(st.lists(st.integers(0, len(lengths) - 1), min_size=1, max_size=12))
    req = make_requests(lengths, seq_len=6, seed=len(index))
    cand = make_candidates(len(index), index, seed=sum(index))
    for name in TIERS:
        tier = _tier(name, seed=1)
        torch.testing.assert_close(
            tier(req, cand), tier.score_per_candidate(req, cand), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", TIERS)
def test_request_side_runs_once_per_request_and_never_in_score(name: TierName) -> None:
    tier = _tier(name)
    calls = {"encoder": 0, "submodules": 0}

    def count(key: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            calls[key] += 1

        return hook

    tier.request_encoder.register_forward_hook(count("encoder"))
    for m in tier.request_encoder.modules():
        if m is not tier.request_encoder:
            m.register_forward_hook(count("submodules"))
    req = make_requests([4], seq_len=5)
    request_params = {id(p) for p in tier.request_encoder.parameters()}
    with _Recorder() as rec:
        state = tier.encode_request(req)
    assert request_params <= {id(t) for t in rec.args}  # the recorder sees parameters
    assert calls["encoder"] == 1 and calls["submodules"] > 0
    after_encode = dict(calls)
    for n in (1, 1000):
        with _Recorder() as rec:
            tier.score(state, make_candidates(n, None))
        assert calls == after_encode, f"score on {n} candidates ran a request-side module"
        used = {id(t) for t in rec.args}
        assert not used & request_params, "score used a request-side parameter"
    tier(req, make_candidates(1000, None))
    assert calls["encoder"] == 2  # one more request, whatever the candidate count


@pytest.mark.parametrize("name", TIERS)
def test_one_request_broadcasts_views_and_copies_nothing_per_candidate(name: TierName) -> None:
    tier = _tier(name)
    n, length = 50, 20
    req = make_requests([length], seq_len=length)
    state = tier.encode_request(req)
    storages = {t.untyped_storage().data_ptr() for t in _state_tensors(state)}
    with _Recorder() as rec:
        tier.score(state, make_candidates(n, None))
    candidate_shaped = [
        t
        for t in rec.args
        if t.dim() >= 1 and t.shape[0] == n and t.untyped_storage().data_ptr() in storages
    ]
    # Every candidate-shaped use of request memory is an expand view: stride 0, no copy.
    assert all(t.stride(0) == 0 for t in candidate_shaped), [t.stride() for t in candidate_shaped]
    if name is not TierName.SMALL:  # the small tier meets the user vector inside one bmm
        assert candidate_shaped, "expected the request part to be broadcast over candidates"
    for op in ("index_select", "repeat", "repeat_interleave", "gather"):
        assert op not in {getattr(f, "__name__", "") for f in _funcs(tier, state, n)}, op
    # Nothing the size of the sequence's keys copied per candidate ([C, L, H]); the naive path
    # does exactly that, so the bound can fail.
    bound = n * length * DIMS.attention_dim
    assert max(t.numel() for t in rec.outputs) < bound
    if name is TierName.LARGE:
        with _Recorder() as naive:
            tier.score_per_candidate(req, make_candidates(n, None))
        assert max(t.numel() for t in naive.outputs) >= bound


def _funcs(tier: RankerTier[Any], state: Any, n: int) -> list[Any]:
    called: list[Any] = []

    class _Funcs(TorchFunctionMode):
        def __torch_function__(
            self,
            func: Callable[..., Any],
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            called.append(func)
            return func(*args, **(kwargs or {}))

    with _Funcs():
        tier.score(state, make_candidates(n, None))
    return called


def test_one_request_attention_is_one_product_against_the_request_keys() -> None:
    torch.manual_seed(0)
    dims = dataclasses.replace(DIMS, attention_heads=1)
    tier = build_tier(TierName.LARGE, dims)
    n, length, h = 40, 11, dims.attention_dim
    state = tier.encode_request(make_requests([length], seq_len=length))
    products: list[tuple[tuple[int, ...], ...]] = []

    class _Products(TorchDispatchMode):
        def __torch_dispatch__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            if func.overloadpacket in (torch.ops.aten.bmm, torch.ops.aten.mm):
                products.append(tuple(tuple(a.shape) for a in args[:2]))
            return func(*args, **(kwargs or {}))

    with _Products():
        tier.score(state, make_candidates(n, None, dims=dims))
    over_sequence = [p for p in products if length in p[0] + p[1]]
    # q K^T as one [C, H] x [H, L] product, then weights V as one [C, L] x [L, H].
    assert over_sequence == [((1, n, h), (1, h, length)), ((1, n, length), (1, length, h))]


@pytest.mark.parametrize("name", TIERS)
def test_gradients_reach_the_inputs(name: TierName) -> None:
    tier = _tier(name)
    req = make_requests([4, 0], seq_len=5)
    for t in (req.pooled, req.sequence):
        t.requires_grad_(True)
    cand = make_candidates(6, [0, 1, 0, 1, 1, 0])
    cand.pooled.requires_grad_(True)
    tier(req, cand).sum().backward()
    for label, t in (
        ("request pooled", req.pooled),
        ("sequence", req.sequence),
        ("candidate pooled", cand.pooled),
    ):
        assert t.grad is not None and torch.isfinite(t.grad).all(), label
        assert t.grad.abs().sum() > 0, label
    assert req.sequence.grad is not None
    seq_grad = req.sequence.grad
    assert seq_grad[0, :4].abs().sum() > 0
    assert seq_grad[0, 4:].abs().sum() == 0 and seq_grad[1].abs().sum() == 0  # padding, cold
    for p in tier.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", TIERS)
def test_flops_match_torch_flop_counter(name: TierName) -> None:
    tier = _tier(name)
    n, length = 9, 7
    req = make_requests([length], seq_len=length)
    cand = make_candidates(n, None)
    with FlopCounterMode(display=False) as rc:
        tier(req, cand)
    with FlopCounterMode(display=False) as pc:
        tier.score_per_candidate(req, cand)
    assert tier.flops(n, length) == rc.get_total_flops()
    assert tier.flops(n, length, per_candidate=True) == pc.get_total_flops()
    # The request's work is paid once: the per-candidate path costs more for every C > 1.
    assert tier.flops(1, length) == tier.flops(1, length, per_candidate=True)
    assert tier.flops(500, 256, per_candidate=True) > tier.flops(500, 256)


def test_large_tier_request_centric_cost_is_far_below_per_candidate_at_500() -> None:
    dims = TierDims(640, 8, 64, 384, 8, max_sequence_len=512)
    tier = build_tier(TierName.LARGE, dims)
    ratio = tier.flops(500, 512, per_candidate=True) / tier.flops(500, 512)
    assert ratio > 10
    # Doubling the candidates less than doubles the cost while the request part dominates.
    assert tier.flops(20, 512) < 2 * tier.flops(10, 512)


@pytest.mark.parametrize("name", TIERS)
def test_width_mismatch_names_the_field(name: TierName) -> None:
    tier = _tier(name)
    wide = dataclasses.replace(DIMS, user_pooled_dim=13, ad_dense_dim=3)
    with pytest.raises(InputError) as err:
        tier.encode_request(make_requests([2], seq_len=3, dims=wide))
    assert err.value.exit_code == EXIT_USAGE
    assert "RequestInputs.pooled" in str(err.value) and "12" in str(err.value)
    state = tier.encode_request(make_requests([2], seq_len=3))
    with pytest.raises(InputError, match=r"CandidateInputs\.dense"):
        tier.score(state, make_candidates(4, None, dims=wide))


@pytest.mark.parametrize("name", TIERS)
def test_bad_request_index_and_dtype_name_the_field(name: TierName) -> None:
    tier = _tier(name)
    two = make_requests([2, 3], seq_len=3)
    state = tier.encode_request(two)
    with pytest.raises(InputError, match=r"CandidateInputs\.request_index") as err:
        tier.score(state, make_candidates(3, [0, 2, 1]))
    assert "[0, 2)" in str(err.value)
    with pytest.raises(InputError, match=r"CandidateInputs\.request_index"):
        tier.score(state, make_candidates(3, None))  # None means one request
    with pytest.raises(InputError, match=r"CandidateInputs\.request_index"):
        tier.score_per_candidate(two, make_candidates(3, [0, -1, 1]))
    double = make_requests([2], seq_len=3)
    double = dataclasses.replace(
        double,
        pooled=double.pooled.double(),
        dense=double.dense.double(),
        sequence=double.sequence.double(),
    )
    with pytest.raises(InputError, match=r"RequestInputs\.pooled") as err:
        tier.encode_request(double)
    assert "float64" in str(err.value)


def test_large_tier_refuses_sequences_longer_than_its_positions() -> None:
    tier = _tier(TierName.LARGE)
    with pytest.raises(InputError, match=r"RequestInputs\.sequence") as err:
        tier.encode_request(make_requests([3], seq_len=DIMS.max_sequence_len + 1))
    assert "max_sequence_len" in str(err.value)
    # The other tiers take any length.
    _tier(TierName.SMALL).encode_request(make_requests([3], seq_len=DIMS.max_sequence_len + 1))


def test_bad_dims_are_all_reported() -> None:
    bad = dataclasses.replace(DIMS, tower_sizes=(16, 0), attention_dim=9, cross_rank=0)
    with pytest.raises(InputError) as err:
        build_tier(TierName.LARGE, bad)
    text = str(err.value)
    assert "TierDims.tower_sizes" in text and "TierDims.cross_rank" in text
    assert "TierDims.attention_dim" in text and "3 problems" in text
    with pytest.raises(InputError, match=r"TierDims\.top_sizes"):
        dataclasses.replace(DIMS, top_sizes=()).validate()


@pytest.mark.parametrize("name", TIERS)
def test_non_contiguous_inputs_give_the_same_logits(name: TierName) -> None:
    tier = _tier(name)
    req = make_requests([3, 6], seq_len=6)
    cand = make_candidates(5, [1, 0, 1, 1, 0])
    strided = dataclasses.replace(
        req,
        sequence=req.sequence.transpose(0, 1).contiguous().transpose(0, 1),
        sequence_mask=req.sequence_mask.t().contiguous().t(),
    )
    assert not strided.sequence.is_contiguous() and not strided.sequence_mask.is_contiguous()
    torch.testing.assert_close(tier(strided, cand), tier(req, cand))

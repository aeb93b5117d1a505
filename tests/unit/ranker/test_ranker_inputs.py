"""Tier inputs: structural checks naming the field (all problems at once), ``take``, the
request-index check, and construction from an embed_store lookup result (pooled rows, padded
sequences with their mask, truncation to the most recent items, bad lookups)."""

from __future__ import annotations

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedTensor

from adrank.errors import EXIT_USAGE, InputError
from embed_store.batch import LookupResult
from ranker.inputs import CandidateInputs, RequestInputs, inputs_from_lookup


def _req(**over: object) -> RequestInputs:
    fields: dict[str, object] = {
        "pooled": torch.zeros(2, 4),
        "dense": torch.zeros(2, 3),
        "sequence": torch.zeros(2, 5, 6),
        "sequence_mask": torch.zeros(2, 5, dtype=torch.bool),
    }
    fields.update(over)
    return RequestInputs(**fields)  # type: ignore[arg-type]


def test_valid_inputs_report_their_sizes() -> None:
    req = _req()
    assert req.num_requests == 2 and req.sequence_len == 5
    cand = CandidateInputs(torch.zeros(7, 3), torch.zeros(7, 1), torch.zeros(7, dtype=torch.int64))
    assert cand.num_candidates == 7
    cand.check_request_index(1)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"pooled": torch.zeros(2, 4, dtype=torch.int64)}, "RequestInputs.pooled"),
        ({"dense": torch.zeros(3, 3)}, "RequestInputs.dense"),
        ({"sequence": torch.zeros(2, 5)}, "RequestInputs.sequence"),
        ({"sequence": torch.zeros(3, 5, 6)}, "RequestInputs.sequence"),
        ({"sequence_mask": torch.zeros(2, 5)}, "RequestInputs.sequence_mask"),
        ({"sequence_mask": torch.zeros(2, 4, dtype=torch.bool)}, "RequestInputs.sequence_mask"),
        ({"dense": torch.zeros(2, 3, dtype=torch.float64)}, "RequestInputs.dense"),
        ({"pooled": [[0.0] * 4] * 2}, "RequestInputs.pooled"),
    ],
)
def test_bad_request_inputs_name_the_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as err:
        _req(**over)
    assert err.value.exit_code == EXIT_USAGE
    assert field in str(err.value)


def test_every_request_problem_is_reported_at_once() -> None:
    with pytest.raises(InputError) as err:
        _req(dense=torch.zeros(2, 3, 1), sequence_mask=torch.ones(2, 5, dtype=torch.int64))
    text = str(err.value)
    assert "2 problems" in text
    assert "RequestInputs.dense" in text and "RequestInputs.sequence_mask" in text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((torch.zeros(3, 2), torch.zeros(4, 1)), "CandidateInputs.dense"),
        ((torch.zeros(3), torch.zeros(3, 1)), "CandidateInputs.pooled"),
        (
            (torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3, dtype=torch.int32)),
            "CandidateInputs.request_index",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(2, dtype=torch.int64)),
            "CandidateInputs.request_index",
        ),
    ],
)
def test_bad_candidate_inputs_name_the_field(args: tuple[torch.Tensor, ...], field: str) -> None:
    with pytest.raises(InputError) as err:
        CandidateInputs(*args)
    assert field in str(err.value)


def test_request_index_is_checked_against_the_request_count() -> None:
    cand = CandidateInputs(torch.zeros(3, 2), torch.zeros(3, 1), torch.tensor([0, 1, 3]))
    cand.check_request_index(4)
    with pytest.raises(InputError, match=r"\[0, 3\)") as err:
        cand.check_request_index(3)
    assert "CandidateInputs.request_index" in str(err.value)
    with pytest.raises(InputError, match="2 requests"):
        CandidateInputs(torch.zeros(3, 2), torch.zeros(3, 1)).check_request_index(2)


def test_take_copies_rows_in_the_given_order() -> None:
    req = _req(pooled=torch.arange(8.0).view(2, 4))
    taken = req.take(torch.tensor([1, 1, 0]))
    assert taken.num_requests == 3
    assert torch.equal(taken.pooled[:, 0], torch.tensor([4.0, 4.0, 0.0]))
    assert taken.pooled.data_ptr() != req.pooled.data_ptr()


def _lookup(seq_lengths: list[int], cats_lengths: list[int] | None = None) -> LookupResult:
    r = len(seq_lengths)
    n = sum(seq_lengths)
    ads = torch.arange(n * 2, dtype=torch.float32).view(n, 2)  # item i = [2i, 2i+1]
    cats_lengths = seq_lengths if cats_lengths is None else cats_lengths
    cats = torch.full((sum(cats_lengths), 1), -1.0)
    return LookupResult(
        candidates=KeyedTensor(["ad", "pos"], [3, 1], torch.ones(4, 4)),
        requests=KeyedTensor(["user", "geo"], [2, 2], torch.arange(r * 4.0).view(r, 4)),
        candidate_request=torch.tensor([0, 0, 1, r - 1]),
        sequences={
            "clicked_ads": JaggedTensor(values=ads, lengths=torch.tensor(seq_lengths)),
            "clicked_cats": JaggedTensor(values=cats, lengths=torch.tensor(cats_lengths)),
        },
    )


def test_inputs_from_lookup_pads_sequences_and_masks_them() -> None:
    result = _lookup([2, 0, 3])
    req, cand = inputs_from_lookup(
        result,
        request_dense=torch.zeros(3, 2),
        candidate_dense=torch.zeros(4, 1),
        sequence_features=("clicked_ads", "clicked_cats"),
    )
    assert req.pooled.shape == (3, 4) and cand.pooled.shape == (4, 4)
    assert torch.equal(cand.request_index, torch.tensor([0, 0, 1, 2]))  # type: ignore[arg-type]
    assert req.sequence.shape == (3, 3, 3)
    assert req.sequence_mask.tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]
    # Request 2's items are the result's items 2, 3, 4 (after request 0's two).
    assert req.sequence[2, :, :2].tolist() == [[4.0, 5.0], [6.0, 7.0], [8.0, 9.0]]
    assert req.sequence[2, :, 2].tolist() == [-1.0, -1.0, -1.0]
    assert req.sequence[0, 2].abs().sum() == 0 and req.sequence[1].abs().sum() == 0


def test_inputs_from_lookup_keeps_the_most_recent_items() -> None:
    req, _ = inputs_from_lookup(
        _lookup([4, 1]),
        torch.zeros(2, 1),
        torch.zeros(4, 1),
        sequence_features=("clicked_ads",),
        max_sequence_len=2,
    )
    assert req.sequence.shape == (2, 2, 2)
    assert req.sequence[0].tolist() == [[0.0, 1.0], [2.0, 3.0]]  # the first (newest) two
    assert req.sequence[1].tolist() == [[8.0, 9.0], [0.0, 0.0]]
    assert req.sequence_mask.tolist() == [[True, True], [True, False]]


def test_inputs_from_lookup_without_sequence_features() -> None:
    req, _ = inputs_from_lookup(_lookup([1, 1]), torch.zeros(2, 1), torch.zeros(4, 1))
    assert req.sequence.shape == (2, 0, 0) and req.sequence_mask.shape == (2, 0)


def test_inputs_from_lookup_refuses_bad_lookups() -> None:
    dense = (torch.zeros(2, 1), torch.zeros(4, 1))
    with pytest.raises(InputError, match=r"LookupResult\.sequences") as err:
        inputs_from_lookup(_lookup([1, 1]), *dense, sequence_features=("watched",))
    assert "watched" in str(err.value)
    with pytest.raises(InputError, match=r"LookupResult\.sequences\['clicked_cats'\]"):
        inputs_from_lookup(
            _lookup([1, 2], cats_lengths=[2, 1]),
            *dense,
            sequence_features=("clicked_ads", "clicked_cats"),
        )
    no_requests = LookupResult(candidates=KeyedTensor(["ad"], [1], torch.ones(4, 1)))
    with pytest.raises(InputError, match=r"LookupResult\.requests"):
        inputs_from_lookup(no_requests, *dense)
    with pytest.raises(InputError, match=r"RequestInputs\.dense"):
        inputs_from_lookup(_lookup([1, 1]), torch.zeros(3, 1), torch.zeros(4, 1))

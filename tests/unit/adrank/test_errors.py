from adrank.errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    InputError,
    NotFoundError,
    PlanError,
    PlanErrorKind,
    StoreError,
)


def test_message_renders_source_and_hint() -> None:
    err = InputError("expected int64, found double", source="logs.parquet:ad_id", hint="cast it")
    text = str(err)
    assert text.splitlines()[0] == "expected int64, found double"
    assert "logs.parquet:ad_id" in text
    assert "cast it" in text


def test_exit_and_grpc_codes_per_class() -> None:
    assert InputError("x").exit_code == EXIT_USAGE
    assert NotFoundError("x").exit_code == EXIT_USAGE
    assert StoreError("x").exit_code == EXIT_RUNTIME
    assert InputError("x").grpc_code_name == "INVALID_ARGUMENT"
    assert NotFoundError("x").grpc_code_name == "NOT_FOUND"
    assert PlanError("x", kind=PlanErrorKind.PLAN_MISMATCH).kind is PlanErrorKind.PLAN_MISMATCH


def test_from_problems_lists_every_problem() -> None:
    merged = InputError.from_problems(
        [InputError("bad a", source="a.parquet:x"), InputError("bad b", source="b.parquet:y")]
    )
    text = str(merged)
    assert text.startswith("2 problems found")
    assert "a.parquet:x" in text and "b.parquet:y" in text


def test_from_problems_single_is_identity() -> None:
    only = InputError("one")
    assert InputError.from_problems([only]) is only


def test_transport_errors_map_to_their_status_codes() -> None:
    from adrank.errors import DeadlineExceededError, UnauthenticatedError

    assert DeadlineExceededError("x").grpc_code_name == "DEADLINE_EXCEEDED"
    assert isinstance(DeadlineExceededError("x"), StoreError)  # a retryable runtime failure
    assert UnauthenticatedError("x").grpc_code_name == "UNAUTHENTICATED"
    assert UnauthenticatedError("x").exit_code == EXIT_USAGE

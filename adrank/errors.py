"""The exception tree every adrank package raises.

Third-party exceptions (pyarrow, rocksdict, grpc, torch) are converted where they enter our code
(``raise InputError(...) from exc``) and never cross a public API. Each class carries the gRPC
status code a server maps it to and the CLI exit code it maps to, so one interceptor and one CLI
handler cover every error.

A message states what was expected, what was found, where, and what to do: ``str(err)`` renders
the message followed by ``source`` and ``hint`` lines when they are set.
"""

from __future__ import annotations

import enum

__all__ = [
    "AdrankError",
    "DeadlineExceededError",
    "InputError",
    "NotFoundError",
    "PlanError",
    "PlanErrorKind",
    "RankFailedError",
    "StoreError",
    "UnauthenticatedError",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
]

EXIT_OK = 0
"""Process exit code for success."""
EXIT_RUNTIME = 1
"""Process exit code for a failure while doing valid work (I/O error, store failure, crash)."""
EXIT_USAGE = 2
"""Process exit code for bad input or bad usage: the user must change what they passed."""


class AdrankError(Exception):
    """Base class of every error adrank raises on purpose.

    Args:
        message: What was expected and what was found.
        source: Where: a path, a ``path:column``, a field name or a request field.
        hint: What to do about it.
    """

    grpc_code_name: str = "INTERNAL"
    """Name of the ``grpc.StatusCode`` member a server maps this error to (kept as a string so this
    module does not import grpc)."""
    exit_code: int = EXIT_RUNTIME

    def __init__(self, message: str, *, source: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        if self.source:
            parts.append(f"  where: {self.source}")
        if self.hint:
            parts.append(f"  fix: {self.hint}")
        return "\n".join(parts)


class InputError(AdrankError):
    """The caller passed something invalid: a missing or mistyped column, a corrupt file, a flag.

    Several problems found in one validation pass are reported together in one InputError; use
    :meth:`from_problems` for that.
    """

    grpc_code_name = "INVALID_ARGUMENT"
    exit_code = EXIT_USAGE

    @classmethod
    def from_problems(cls, problems: list[InputError]) -> InputError:
        """Merge several problems found in one pass into one error that lists them all.

        Args:
            problems: At least one error.

        Returns:
            The single error if there is one, else an InputError whose message lists every problem.
        """
        if not problems:
            raise ValueError("from_problems needs at least one problem")
        if len(problems) == 1:
            return problems[0]
        lines = [f"{len(problems)} problems found:"]
        for i, p in enumerate(problems, 1):
            lines.append(f"{i}. " + str(p).replace("\n", "\n   "))
        return cls("\n".join(lines))


class NotFoundError(AdrankError):
    """A named thing (feature, group, entity, table, file) does not exist."""

    grpc_code_name = "NOT_FOUND"
    exit_code = EXIT_USAGE


class PlanErrorKind(enum.Enum):
    """Why a plan could not be made or used."""

    INSUFFICIENT_MEMORY = "insufficient_memory"
    CONSTRAINT_CONFLICT = "constraint_conflict"
    PLAN_MISMATCH = "plan_mismatch"


class PlanError(AdrankError):
    """No valid plan exists for the inputs, or a plan does not match what it is applied to.

    Args:
        kind: The reason, used by callers and tests to branch without parsing the message.
    """

    grpc_code_name = "FAILED_PRECONDITION"
    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        kind: PlanErrorKind,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, source=source, hint=hint)
        self.kind = kind


class StoreError(AdrankError):
    """The feature or embedding store failed while doing valid work (I/O, corruption, lock)."""

    grpc_code_name = "UNAVAILABLE"
    exit_code = EXIT_RUNTIME


class DeadlineExceededError(StoreError):
    """A call's deadline passed before the server answered (retry with a longer deadline)."""

    grpc_code_name = "DEADLINE_EXCEEDED"


class UnauthenticatedError(AdrankError):
    """A server refused the call's credentials (missing or wrong token)."""

    grpc_code_name = "UNAUTHENTICATED"
    exit_code = EXIT_USAGE


class RankFailedError(AdrankError):
    """A rank of a multi-process runtime died, failed, or did not answer within its timeout.

    The runtime that raised it is unusable afterwards; restart it. The message names the rank
    (and its exit code when adrank started it) and the timeout that expired.
    """

    grpc_code_name = "UNAVAILABLE"
    exit_code = EXIT_RUNTIME

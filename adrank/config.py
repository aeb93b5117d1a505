"""The deployment configuration file (STYLE §7): one YAML file, a section per long-running command.

A deployment keeps the settings of its servers and joins in one file rather than in shell scripts
full of flags::

    feature_server:
      host: 10.0.0.5
      port: 50061
      tls_cert_path: /etc/adrank/tls/server.pem
      tls_key_path: /etc/adrank/tls/server.key
      block_cache_bytes: 1GiB
    join:
      memory_budget_bytes: 8GiB

Every section and key is optional: a missing one takes the code default and an empty file is the
defaults. Sizes take the strings of :mod:`adrank.units` (``4MiB``, ``2GB``) or ints in bytes.
Paths stay strings, used as given (relative paths are relative to the working directory, as they
are for flags). The models are pydantic with ``extra="forbid"`` (an unknown key is an error that
names its path and the file), ``frozen=True`` and ``strict=True`` (``port: "80"`` or
``port: true`` is refused rather than coerced).

Precedence, lowest first: these defaults, then the file, then the flags the user passed; the CLI
applies it (:mod:`adrank.cli._config`), ``adrank config show`` prints the result.

The defaults repeat those of ``feature_service.server.ServerConfig``, ``embed_store.server``,
``ranker.server``, ``embed_store.sharded_runtime.RuntimeConfig`` and ``feature_service.pit_join``,
because ``adrank`` may not import those packages (STYLE §1); ``tests/unit/adrank/test_config.py``
checks that they agree. Ranges are those the flags and ``adrank.rpc.listen_problems`` enforce;
whether a certificate exists or a non-loopback host has TLS is checked when a server starts.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from adrank.errors import InputError, NotFoundError
from adrank.units import parse_size_bytes

__all__ = [
    "DeploymentConfig",
    "EmbeddingServerConfig",
    "FeatureServerConfig",
    "JoinConfig",
    "RankServerConfig",
    "ServerListenConfig",
    "load_config",
    "parse_config",
]

logger = logging.getLogger(__name__)

_HINT = "compare with examples/deployment.yaml, or run `adrank config show` for every key"


def _size_bytes(value: Any) -> Any:
    """A size field's value in bytes: an int, or a string of :mod:`adrank.units` (``"2GiB"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return value  # strict int validation reports the wrong type
    try:
        return parse_size_bytes(value if isinstance(value, (int, str)) else str(value))
    except InputError as exc:
        # pydantic collects ValueError with the key's location; an InputError would escape it.
        raise ValueError(exc.message) from exc


_Size = Annotated[int, BeforeValidator(_size_bytes)]
_Port = Annotated[int, Field(ge=0, le=65535)]
_Count = Annotated[int, Field(ge=1)]
_Seconds = Annotated[float, Field(gt=0)]
_Text = Annotated[str, Field(min_length=1)]
_OptionalPath = Annotated[str, Field(min_length=1)] | None

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_MAX_RECEIVE_BYTES = 4 << 20
_DEFAULT_MAX_SEND_BYTES = 64 << 20
_DEFAULT_GRACE_S = 5.0
_DEFAULT_RANK_TIMEOUT_S = 30.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ServerListenConfig(_Section):
    """Where and how a gRPC server listens: the fields of ``adrank.rpc.ListenConfig``.

    Each server section extends it with its own port, worker count and settings.

    Args:
        host: Address to bind; anything but loopback needs ``tls_cert_path`` and ``tls_key_path``
            (checked when the server starts).
        port: TCP port, 0..65535; 0 picks a free one.
        tls_cert_path: PEM certificate chain of the server.
        tls_key_path: PEM private key of the server.
        token_path: File holding the token clients must send (``authorization: Bearer``).
        max_receive_bytes: Largest request accepted, in bytes (4 MiB).
        max_send_bytes: Largest response sent, in bytes (64 MiB).
        max_workers: Handler threads, >= 1.
        grace_s: Seconds in-flight calls get to finish on stop, >= 0.
    """

    host: _Text = _DEFAULT_HOST
    port: _Port = 0
    tls_cert_path: _OptionalPath = None
    tls_key_path: _OptionalPath = None
    token_path: _OptionalPath = None
    max_receive_bytes: _Size = _DEFAULT_MAX_RECEIVE_BYTES
    max_send_bytes: _Size = _DEFAULT_MAX_SEND_BYTES
    max_workers: _Count = 1
    grace_s: Annotated[float, Field(ge=0)] = _DEFAULT_GRACE_S


class FeatureServerConfig(ServerListenConfig):
    """Section ``feature_server``: ``adrank serve-features`` (``feature_service.ServerConfig``).

    Args:
        port: Default 50061.
        max_workers: Default 8 (reads release the GIL in RocksDB).
        ttl_at_server_clock: Newest-version reads without ``now_us`` apply each group's TTL at the
            server's clock; False applies none then (``--no-server-clock-ttl``).
        block_cache_bytes: RocksDB block cache of the store, in bytes (256 MiB; no flag).
    """

    port: _Port = 50061
    max_workers: _Count = 8
    ttl_at_server_clock: bool = True
    block_cache_bytes: _Size = 256 << 20


class EmbeddingServerConfig(ServerListenConfig):
    """Section ``embedding_server``: ``adrank serve-embeddings``.

    Args:
        port: Default 50062.
        max_workers: Default 4 (lookups run one at a time; the others decode meanwhile).
        devices: 1 computes every table in-process; N > 1 starts N ranks on this host.
        threads_per_rank: Cores each rank's kernels use.
        rank_timeout_s: Longest wait for any rank, in seconds (> 0).
    """

    port: _Port = 50062
    max_workers: _Count = 4
    devices: _Count = 1
    threads_per_rank: _Count = 1
    rank_timeout_s: _Seconds = _DEFAULT_RANK_TIMEOUT_S


class RankServerConfig(ServerListenConfig):
    """Section ``rank_server``: ``adrank serve``.

    Args:
        port: Default 50063.
        max_workers: Default 4.
        devices: Embedding devices: 1 in-process, N > 1 ranks on this host.
        threads_per_rank: Cores each rank's lookup kernels use.
        score_threads: Cores one request's scoring uses (torch intra-op threads).
        rank_timeout_s: Longest wait for any rank with ``devices`` > 1, in seconds (> 0).
        features_timeout_s: Deadline of each feature read from a feature server, retries
            included, in seconds (> 0).
        metrics_port: Port of the Prometheus endpoint, 0..65535 (0 picks one); None: no endpoint.
        metrics_host: Address of the metrics endpoint.
        router_log: JSON-lines file every routing decision is appended to; None: none.
    """

    port: _Port = 50063
    max_workers: _Count = 4
    devices: _Count = 1
    threads_per_rank: _Count = 1
    score_threads: _Count = 1
    rank_timeout_s: _Seconds = _DEFAULT_RANK_TIMEOUT_S
    features_timeout_s: _Seconds = 1.0
    metrics_port: _Port | None = None
    metrics_host: _Text = _DEFAULT_HOST
    router_log: _OptionalPath = None


class JoinConfig(_Section):
    """Section ``join``: ``adrank join`` (``feature_service.join_to_parquet``).

    Args:
        memory_budget_bytes: Memory for scanned groups' versions, in bytes (2 GiB); groups that
            do not fit are read by seeks.
        batch_rows: Example rows per batch.
        strategy: ``auto`` (per group, by cost), ``scan`` or ``seek``.
        snapshot_dir: Where snapshots of scanned groups are kept; None: none.
    """

    memory_budget_bytes: _Size = 2 << 30
    batch_rows: _Count = 65_536
    strategy: Literal["auto", "scan", "seek"] = "auto"
    snapshot_dir: _OptionalPath = None


class DeploymentConfig(_Section):
    """The root of a deployment file: one optional section per command.

    A section written without keys (``join:`` alone) is its defaults, as is a missing one.

    Example::

        DeploymentConfig()                      # every default
        parse_config("join:\\n  batch_rows: 4096\\n", "inline").join.batch_rows  # 4096
    """

    feature_server: FeatureServerConfig = Field(default_factory=FeatureServerConfig)
    embedding_server: EmbeddingServerConfig = Field(default_factory=EmbeddingServerConfig)
    rank_server: RankServerConfig = Field(default_factory=RankServerConfig)
    join: JoinConfig = Field(default_factory=JoinConfig)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: {} if value is None else value for key, value in data.items()}
        return data


def load_config(path: str | os.PathLike[str]) -> DeploymentConfig:
    """Read a deployment file.

    Args:
        path: The YAML file. An empty file (or one holding only comments) is every default.

    Returns:
        The configuration: the code defaults overridden by what the file sets.

    Raises:
        NotFoundError: The file does not exist.
        InputError: It cannot be read, is not YAML (the message names file and line), repeats a
            key, or has an unknown key or a bad value (every one named by its key path, e.g.
            ``feature_server.port``, with the file and line as source).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise NotFoundError(
            "the configuration file does not exist",
            source=str(p),
            hint="pass an existing file to --config (`adrank config show` prints the defaults)",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the configuration file: {exc}", source=str(p)) from exc
    return parse_config(text, str(p))


def parse_config(text: str, source: str) -> DeploymentConfig:
    """Parse the YAML text of a deployment file (see :func:`load_config`).

    Args:
        text: The file's content.
        source: Names the file in errors.

    Returns:
        The configuration.

    Raises:
        InputError: See :func:`load_config`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        parts = (getattr(exc, "context", None), getattr(exc, "problem", None))
        problem = ", ".join(part for part in parts if part) or str(exc)
        raise InputError(
            f"the configuration file is not valid YAML: {problem}",
            source=f"{source}:{mark.line + 1}" if mark is not None else source,
            hint="fix the YAML on that line (indentation, a missing ':' or quote, a tag)",
        ) from exc
    problems = _duplicate_keys(root, source, ())
    try:
        config = DeploymentConfig.model_validate({} if doc is None else doc)
    except ValidationError as exc:
        problems += [_problem(error, root, source) for error in exc.errors()]
        error = _one_error(problems, source)
        raise InputError(error.message, source=error.source, hint=error.hint) from exc
    if problems:
        raise _one_error(problems, source)
    return config


def _one_error(problems: list[InputError], source: str) -> InputError:
    """One error for all problems: a single one as it is, several listed with the file as source."""
    if len(problems) == 1:
        return problems[0]
    merged = InputError.from_problems(problems)
    return InputError(merged.message, source=source, hint=_HINT)


def _problem(error: Any, root: yaml.Node | None, source: str) -> InputError:
    """One pydantic error as an InputError naming the key path and the file's line."""
    loc = tuple(str(part) for part in error["loc"])
    key_path = ".".join(loc)
    line = _line_of(root, loc)
    where = f"{source}:{line}" if line is not None else source
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        known = _known_keys(parent)
        close = difflib.get_close_matches(loc[-1], known, n=1)
        return InputError(
            f"unknown {'key' if parent else 'section'} {key_path!r}"
            + (f" (did you mean {'.'.join((*parent, close[0]))!r}?)" if close else ""),
            source=where,
            hint=f"known: {', '.join(known)}",
        )
    if kind == "model_type":
        found = type(error["input"]).__name__
        return InputError(
            f"{key_path or 'the top level'} must be a mapping of keys, found {found}",
            source=where,
            hint=_HINT,
        )
    if kind == "value_error":  # our own validators' messages already say what was found
        return InputError(f"{key_path}: {error['ctx']['error']}", source=where)
    message = str(error["msg"])
    message = message[:1].lower() + message[1:]
    return InputError(f"{key_path}: {message}, found {error['input']!r}", source=where)


def _known_keys(parent: tuple[str, ...]) -> list[str]:
    """Keys allowed under ``parent`` (() is the top level)."""
    model: type[BaseModel] = DeploymentConfig
    for part in parent:
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation
    return list(model.model_fields)


def _line_of(root: yaml.Node | None, loc: tuple[str, ...]) -> int | None:
    """1-based line of the key at ``loc`` (of the deepest key found), None if none is."""
    node, line = root, None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                node, line = value, key.start_mark.line + 1
                break
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None, source: str, path: tuple[str, ...]) -> list[InputError]:
    """A problem per key written twice in one mapping (PyYAML would keep the last silently)."""
    problems: list[InputError] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            line = key.start_mark.line + 1
            if name in seen:
                problems.append(
                    InputError(
                        f"{'.'.join((*path, name))} is written twice (lines {seen[name]} and "
                        f"{line})",
                        source=f"{source}:{line}",
                        hint="keep one of them",
                    )
                )
            seen.setdefault(name, line)
            problems += _duplicate_keys(value, source, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            problems += _duplicate_keys(item, source, path)
    return problems

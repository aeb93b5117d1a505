"""``adrank bench NAME``: run one of the benchmarks in ``bench/`` and print its JSON result.

Same as ``python -m bench NAME`` with the settings users change most as flags: ``--devices N``
(parity: ranks of the sharded side) and ``--json OUT``. Every run is also appended to
``bench/results/NAME.jsonl``. Names are written with dashes or underscores
(``request-centric`` = ``request_centric``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from adrank.cli._args import positive_int
from adrank.errors import InputError

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run a benchmark (parity, request-centric, kv_get, ...) and print its JSON result",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", help="benchmark name, e.g. parity, request-centric, kv_get, stats")
    parser.add_argument("--config", help="YAML file overlaying the benchmark's defaults")
    parser.add_argument("--devices", type=positive_int, help="ranks of the sharded side (parity)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for checks")
    parser.add_argument("--json", dest="json_out", metavar="OUT", help="also write the result here")
    return parser


def run(args: argparse.Namespace) -> int:
    from bench.harness import BENCHMARKS, run_benchmark

    name = args.name.replace("-", "_")
    if name not in BENCHMARKS:
        raise InputError(
            f"unknown benchmark {args.name!r}",
            source="NAME",
            hint="choose one of: " + ", ".join(b.replace("_", "-") for b in BENCHMARKS),
        )
    overrides: dict[str, Any] = {}
    if args.devices is not None:
        overrides["devices"] = args.devices
    try:
        result = run_benchmark(name, args.config, smoke=args.smoke, overrides=overrides)
    except SystemExit as exc:  # the harness reports bad settings this way
        raise InputError(str(exc), source=args.config or "--devices") from None
    text = json.dumps(json.loads(result.to_json()), indent=1, sort_keys=True)
    print(text)
    if args.json_out:
        from adrank.formats import atomic_write_text

        atomic_write_text(args.json_out, text + "\n")
    return 0

"""``python -m bench NAME [--config FILE] [--smoke] [--json OUT]``: run one benchmark."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bench.harness import BENCHMARKS, run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("--config", help="YAML overlay on the benchmark's defaults")
    parser.add_argument("--smoke", action="store_true", help="tiny size, for tests")
    parser.add_argument("--json", dest="json_out", help="also write the result to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("numba").setLevel(logging.WARNING)
    result = run_benchmark(args.name, args.config, smoke=args.smoke)
    text = json.dumps(json.loads(result.to_json()), indent=1, sort_keys=True)
    print(text)
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks [NAME ...] [--quick] [--minutes N]``: run benchmarks, print figures.

``offers bench`` runs this program from the repository, so the installed package never imports
the benchmarks or their dependencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from benchmarks.runner import BENCHMARKS, run_benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"{', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smaller world, for a fast check")
    parser.add_argument(
        "--minutes", type=float, default=None, help="how long the soak holds its load (30)"
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        results = run_benchmarks(arguments.names, quick=arguments.quick, minutes=arguments.minutes)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    print(json.dumps(results, default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m tests.faults.preloaded --port P``: the offers server's modules imported once, and a
fresh server process forked from them on each ``start`` line read on stdin.

A start of ``uvicorn serving.app:create_app`` spends most of its seconds importing FastAPI,
pandas, Feast, MLflow and LightGBM; a test that kills the server ten times pays that ten times.
Forked after the imports (as ``gunicorn --preload`` does), each server is a process of its own
that starts the app from nothing else (opens the stores, loads the models, warms up, writes to a
decision log a killed server left behind) and is killed by its own pid. This process answers
each ``start`` with the new server's pid on stdout, and ends on ``exit`` or at the end of stdin.
"""

from __future__ import annotations

import argparse
import os
import sys


def _preload() -> None:
    """What the app imports at start-up, the costly part included: imported, nothing opened."""
    import feast  # noqa: F401
    import lightgbm  # noqa: F401
    import mlflow  # noqa: F401
    import uvicorn  # noqa: F401

    import serving.app  # noqa: F401


def _serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.preloaded")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    _preload()
    print("preloaded", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "exit":
            break
        if command != "start":
            print(f"unknown command {command!r}", file=sys.stderr, flush=True)
            continue
        pid = os.fork()
        if pid == 0:  # the server: its stdout to the log too, stdout here is for the pids
            os.dup2(2, 1)
            code = 0
            try:
                _serve(port)
            except BaseException:  # reported in the log, then the exit code
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        print(pid, flush=True)
        # Reap servers that have ended (killed ones included) without blocking.
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Writing files so that a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replacing(*targets: Path, durable: bool = False) -> Iterator[list[Path]]:
    """Temporary paths beside ``targets``; each replaces its target when the block ends cleanly.

    Write to the yielded paths. On a clean exit every target is replaced (``os.replace``, atomic
    on one file system), after an ``fsync`` of each when ``durable``; on an error no target is
    touched. The temporaries are removed either way.
    """
    outs = [Path(target) for target in targets]
    token = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temporaries = [out.with_name(f".{out.name}.{token}.partial") for out in outs]
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temporaries
        if durable:
            for temporary in temporaries:
                _fsync(temporary)
        for temporary, out in zip(temporaries, outs, strict=True):
            os.replace(temporary, out)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)

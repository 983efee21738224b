"""Spark for a test: Java and pyspark, or a skip that says which is missing."""

from __future__ import annotations

import os
import shutil

import pytest


def require_spark() -> None:
    """Skip the calling test without Java or pyspark; fail instead where
    ``OFFERS_REQUIRE_SERVICES=1`` says every test must run (CI)."""
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        message = "Spark needs Java: no `java` on PATH and JAVA_HOME is not set"
        if os.environ.get("OFFERS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message}, and OFFERS_REQUIRE_SERVICES=1 says it must run")
        pytest.skip(message)
    pytest.importorskip("pyspark")

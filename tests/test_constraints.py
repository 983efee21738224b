"""The lock files against pyproject.toml: every dependency pinned, within its range, and the
serving image's pins the same as the ones `make install` tests with."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "invoice-offers"


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            package, _, version = line.partition("==")
            pins[canonicalize_name(package)] = version.strip()
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    """The project's requirements with ``extras``, following its extras that name the project."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    wanted, seen = list(extras), set()
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize(("lock", "extra"), [("dev.txt", "dev"), ("serve.txt", "serve")])
def test_every_dependency_is_pinned_within_its_range(lock: str, extra: str) -> None:
    pins = _pins(lock)
    unpinned = [str(r) for r in _requirements(extra) if canonicalize_name(r.name) not in pins]
    assert not unpinned, f"not in constraints/{lock}; run `make lock`: {unpinned}"
    outside = [
        f"{r} (pinned {pins[canonicalize_name(r.name)]})"
        for r in _requirements(extra)
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, f"constraints/{lock} is outside pyproject.toml's ranges: {outside}"


def test_the_serving_image_runs_the_versions_the_tests_ran() -> None:
    dev, serve = _pins("dev.txt"), _pins("serve.txt")
    differing = {name: (version, dev.get(name)) for name, version in serve.items()}
    assert {name: pair for name, pair in differing.items() if pair[0] != pair[1]} == {}


def test_the_serving_image_leaves_training_and_test_packages_out() -> None:
    serve = _pins("serve.txt")
    for package in ("mlflow", "matplotlib", "pyspark", "pytest", "schemathesis", "hypothesis"):
        assert package not in serve, package
    assert "mlflow-skinny" in serve and "psycopg" in serve and "psycopg2-binary" not in serve

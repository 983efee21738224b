"""The documents in docs/ against the code: tables, routes, links and citations."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.contract import TABLES, Table
from core.settings import Settings
from serving.app import create_app

REPOSITORY = Path(__file__).resolve().parents[1]
DOCS = REPOSITORY / "docs"
TABLES_DOCUMENT = DOCS / "data-contract.md"
API_DOCUMENT = DOCS / "http-api.md"
NOT_SERVED_HEADING = "## Not served yet"

TABLE_HEADING = re.compile(r"^### `(\w+)`$", re.MULTILINE)
KEY_LINE = re.compile(r"^.*\bKey: (.+)\.$", re.MULTILINE)
COLUMN_ROW = re.compile(r"^\| `(\w+)` \| (\w+) \| (yes|no) \|", re.MULTILINE)
ROUTE_HEADING = re.compile(r"^#{2,4} `([A-Z]+) (/\S*)`$", re.MULTILINE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# The brackets keep this line from matching itself, or a search for the names.
FOREIGN_CITATION = re.compile(r"CONTRAC[T](\.md|\s*§)|DESIG[N]\.md")
CITING_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".html", ".txt"}
CITING_NAMES = {"Makefile", "Dockerfile"}
SKIPPED_FOLDERS = {"data", "mlruns", "node_modules", "__pycache__", "docs"}


def _sections(text: str, heading: re.Pattern[str]) -> dict[str, str]:
    """Each heading's name and the text up to the next heading of that kind."""
    found = list(heading.finditer(text))
    return {
        match.group(1): text[match.end() : found[i + 1].start() if i + 1 < len(found) else None]
        for i, match in enumerate(found)
    }


def _documented_tables() -> dict[str, str]:
    text = TABLES_DOCUMENT.read_text(encoding="utf-8")
    tables = text.split("## The tables", 1)[1].split("\n## ", 1)[0]
    return _sections(tables, TABLE_HEADING)


def test_the_data_contract_documents_exactly_the_tables_of_the_code() -> None:
    assert set(_documented_tables()) == {table.name for table in TABLES}


@pytest.mark.parametrize("table", TABLES, ids=[table.name for table in TABLES])
def test_every_column_is_documented_with_its_type_and_nullability(table: Table) -> None:
    section = _documented_tables()[table.name]
    documented = {name: (kind, null) for name, kind, null in COLUMN_ROW.findall(section)}
    expected = {
        column.name: (column.kind, "yes" if column.nullable else "no") for column in table.columns
    }
    assert documented == expected


@pytest.mark.parametrize("table", TABLES, ids=[table.name for table in TABLES])
def test_every_table_key_is_documented(table: Table) -> None:
    key_line = KEY_LINE.search(_documented_tables()[table.name])
    assert key_line is not None, f"no 'Key: …' line for {table.name}"
    assert re.findall(r"`(\w+)`", key_line.group(1)) == list(table.key)


def _served_routes(tmp_path: Path) -> set[str]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'offers.db'}",
        catalog=REPOSITORY / "catalog" / "offers.yaml",
        api_keys="",
        data_dir=tmp_path / "raw",
    )
    app = create_app(settings)
    routes = {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    pages = (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url)
    return routes | {f"GET {page}" for page in pages if page}


def _served_part_of_api_document() -> str:
    text = API_DOCUMENT.read_text(encoding="utf-8")
    assert NOT_SERVED_HEADING in text
    return text.split(NOT_SERVED_HEADING, 1)[0]


def test_every_route_the_app_serves_is_documented(tmp_path: Path) -> None:
    served = _served_routes(tmp_path)
    assert "POST /v1/offers" in served
    documented = _served_part_of_api_document()
    missing = sorted(route for route in served if f"`{route}`" not in documented)
    assert missing == []


def test_every_route_documented_as_served_is_served(tmp_path: Path) -> None:
    headings = {
        f"{method} {path}" for method, path in ROUTE_HEADING.findall(_served_part_of_api_document())
    }
    assert "POST /v1/offers" in headings
    assert headings - _served_routes(tmp_path) == set()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return kept.replace(" ", "-")


def _anchors(document: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _linking_documents() -> list[Path]:
    return [*sorted(DOCS.glob("*.md")), REPOSITORY / "README.md"]


def test_the_documents_exist() -> None:
    names = {path.name for path in DOCS.glob("*.md")}
    assert {"architecture.md", "data-contract.md", "http-api.md"} <= names


def _points_nowhere(document: Path, target: str) -> bool:
    """A relative link to a missing file, or to a heading its Markdown file does not have."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: are not checked here
        return False
    path_part, _, anchor = target.partition("#")
    linked = (document.parent / path_part).resolve() if path_part else document
    if not linked.exists():
        return True
    return bool(anchor) and linked.suffix == ".md" and anchor not in _anchors(linked)


@pytest.mark.parametrize("document", _linking_documents(), ids=lambda path: path.name)
def test_every_relative_link_points_to_an_existing_file(document: Path) -> None:
    links = LINK.findall(document.read_text(encoding="utf-8"))
    assert [target for target in links if _points_nowhere(document, target)] == []


def _citing_files() -> Iterator[Path]:
    for folder, subfolders, files in os.walk(REPOSITORY):
        subfolders[:] = [
            name for name in subfolders if not name.startswith(".") and name not in SKIPPED_FOLDERS
        ]
        for name in files:
            path = Path(folder) / name
            if path.suffix in CITING_SUFFIXES or name in CITING_NAMES:
                yield path


def test_code_cites_the_documents_in_the_repository_only() -> None:
    citing = [
        f"{path.relative_to(REPOSITORY)}:{number}"
        for path in _citing_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if FOREIGN_CITATION.search(line)
    ]
    assert citing == []

"""The documentation stays true to the code: the settings table, the route table, links and the README's map."""

from __future__ import annotations

import re
from pathlib import Path

from service.app import create_app
from service.cli import settings_reference

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens (code blocks skipped)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_configuration_doc_table_is_in_sync() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    table = page.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0].strip()
    assert table == settings_reference(), "regenerate docs/configuration.md's table with `kan-service settings`"


def test_api_doc_lists_every_route(make_settings) -> None:
    page = (REPO / "docs" / "api.md").read_text()
    spec = create_app(make_settings()).openapi()
    missing = [f"{method.upper()} {path}" for path, operations in spec["paths"].items() for method in operations
               if f"| {method.upper()} | `{path}` |" not in page]
    assert not missing, f"docs/api.md's route table lacks {missing}"


def test_relative_links_reach_a_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, f"links to nothing: {broken}"


def test_readme_map_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    unlisted = [page.name for page in sorted((REPO / "docs").glob("*.md")) if f"](docs/{page.name})" not in readme]
    assert not unlisted, f"README.md's documentation map lacks {unlisted}"

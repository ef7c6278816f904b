"""What a reader sees: no page cites the project's internal issue numbers."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "notebooks").glob("*.md")) + sorted((ROOT / "book").glob("*.md"))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_page_cites_an_internal_issue_number(path):
    assert not re.findall(r"\bissue\s+\d+", path.read_text(), flags=re.I)

"""README.md's results table is the one benchmarks/render.py renders from the committed result files."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_results_table_is_rendered_from_the_result_files():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from render_instance import headline_relabel
    finally:
        sys.path.pop(0)
    table = headline_relabel()
    assert table is not None and "| `relabel` (recommended) |" in table
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    with open(os.path.join(ROOT, "docs", "headline.md")) as fh:
        headline = fh.read()
    assert table in headline, "docs/headline.md is stale: run python benchmarks/render.py"
    assert table in readme, "README.md's results table differs from docs/headline.md's first table"

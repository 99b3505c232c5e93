"""The README's Python example runs as written (the top-level README and the package's)."""

import contextlib
import io
import re

import pytest
from helpers import ROOT


@pytest.mark.parametrize("readme", ["README.md", "bindings/python/README.md"])
def test_readme_example_runs(readme):
    text = (ROOT / readme).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"no python example in {readme}"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 10
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, readme, "exec"), {})
    topic, rest = out.getvalue().split(" ", 1)
    assert topic == "/stocks/euronext/CTT"
    assert "'order': 'buy'" in rest and "'price': 5.55" in rest and "12D3KooW" in rest

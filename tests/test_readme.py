"""README's first-look snippet runs and prints its result (it used to print nothing)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path


def test_first_look_snippet_prints_a_result_close_to_the_exact_one():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## A first look\n\n```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue()
    assert printed.startswith("(4, 1, 64, 64)")
    mean = float(re.search(r"mean (-?[0-9.]+)", printed).group(1))
    assert abs(mean - 0.4) < 0.1, printed

"""Each example, end to end, in its short mode, as its README runs it."""

import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def figures(out: str, name: str) -> dict:
    line = next(l for l in out.splitlines() if l.startswith(name + ":"))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def test_stock_ticker():
    out = run("stock_ticker/ticker.py", "--short")
    f = figures(out, "stock_ticker")
    assert f["quotes"] == 300 and f["matches"] > 0
    assert out.count("MATCH ") == f["matches"]
    # The filtered subscription carries far fewer bytes than taking everything.
    assert f["filtered_bytes"] * 4 < f["everything_bytes"]


def test_history():
    out = run("history/history.py", "--short")
    f = figures(out, "history")
    assert f["events"] == 201 and f["fetched"] == 201 and f["car_events"] == 201
    assert f["missed"] > 0


def test_doc_collab():
    out = run("doc_collab/collab.py", "--short")
    f = figures(out, "doc_collab")
    assert f["writers"] == 3 and f["late_joiners"] == 1
    assert f["heads_after"] == 1 and f["final_length"] > 0
    print(out)

"""The README's quick start runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_quick_start_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    namespace: dict = {}
    exec(compile(blocks[0], "README quick start", "exec"), namespace)  # noqa: S102
    assert abs(namespace["res"].fun - 0.000623) < 5e-7 and namespace["res"].x.shape == (5, 5)
    assert namespace["opt"].t == 300


@pytest.mark.skipif(not README.exists(), reason="tests run outside the source tree")
def test_minibatch_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    block = next(b for b in blocks if "batch_size" in b)
    namespace: dict = {}
    exec(compile(block, "README mini-batch example", "exec"), namespace)  # noqa: S102
    res = namespace["res"]
    assert res.success and 0.24 < res.fun < 0.25 and res.history["epoch"][-1] == 2.0

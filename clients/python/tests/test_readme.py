"""The README's examples, run as they are (after `pip install`) against a real engine:
each ```python block in its own interpreter, with the README's address replaced by the
test engine's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, engine, tmp_path):
    code = BLOCKS[index].replace("udp://127.0.0.1:8888", f"udp://{engine.udp}").replace("127.0.0.1:8888", engine.addr)
    script = tmp_path / f"example{index}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr

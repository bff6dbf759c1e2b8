"""docs/CAFFE2.md is generated from the Caffe2 registries and must be current."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from convnet_io.caffe2.operators import _CONVERTERS

ROOT = Path(__file__).resolve().parent.parent


def test_caffe2_operator_table_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_caffe2_doc.py"), "--check"],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_registered_operator_has_a_row():
    text = (ROOT / "docs" / "CAFFE2.md").read_text()
    for name in _CONVERTERS:
        assert f"| `{name}` |" in text, name

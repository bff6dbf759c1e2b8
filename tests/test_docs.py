"""Generated docs stay in step with the code."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_layers_doc_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_layers_doc.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_layer_type_has_a_torch_converter_or_is_a_source():
    from convnet_io.graph.layers import get_spec, supported_types
    from convnet_io.torch_model import converter_types

    missing = [t for t in supported_types() if not get_spec(t).source and t not in converter_types()]
    assert not missing

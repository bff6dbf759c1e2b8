"""The layer registry imports a family module when one of its types is first looked up.

The index saying which module registers which type is only a shortcut: these tests keep it
complete and right, and check that a type it lacks is still found and that a net imports only the
families its layers use. Fresh interpreters, so that what other tests imported does not count.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, check=False,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_index_names_the_module_of_every_registered_type():
    got = run_fresh("""
        import json
        from convnet_io.graph.layers import registry, supported_types
        types = supported_types()
        print(json.dumps({"types": types,
                          "module": {t: registry._SPECS[t].__module__.rsplit(".", 1)[1] for t in registry._SPECS},
                          "index": registry._FAMILY_OF}))
    """)
    assert len(got["types"]) > 70
    assert got["index"] == got["module"]  # every type and alias, in the module that registers it


def test_a_lookup_imports_only_its_family():
    got = run_fresh("""
        import json, sys
        from convnet_io.graph.layers import get_spec, is_source_type
        assert get_spec("ReLU").type == "ReLU" and get_spec("DepthwiseConvolution").type == "ConvolutionDepthwise"
        assert is_source_type("Input") and not is_source_type("ReLU")
        print(json.dumps(sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("convnet_io.graph.layers."))))
    """)
    # mobile brings the families it derives from (activation, segmentation, vision and conv_nd)
    assert got == ["activation", "common", "conv_nd", "data", "mobile", "registry", "segmentation", "vision"]


def test_a_type_missing_from_the_index_is_still_found():
    got = run_fresh("""
        import json
        from convnet_io.graph.layers import registry
        del registry._FAMILY_OF["Proposal"]
        registry._FAMILY_OF["Upsample"] = "yolo"  # a wrong entry: the lookup then imports them all
        print(json.dumps([registry.get_spec("Proposal").type, registry.get_spec("Upsample").type,
                          registry.get_spec("NoSuchType")]))
    """)
    assert got == ["Proposal", "Upsample", None]

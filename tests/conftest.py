import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SHARED = ROOT.parent / "shared"
os.environ.setdefault("CONVNET_SHARED", str(SHARED))

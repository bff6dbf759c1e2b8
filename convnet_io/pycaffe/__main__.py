"""``python -m convnet_io.pycaffe [--allow-python-layers] SCRIPT.py [ARGS...]``: run a pycaffe
script on convnet (its ``import caffe`` gets convnet_io.pycaffe)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from convnet_io.errors import ConvnetError
    from convnet_io.pycaffe.alias import run_script

    args = list(sys.argv[1:] if argv is None else argv)
    allow = False
    if args and args[0] == "--allow-python-layers":
        allow, args = True, args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    try:
        run_script(args[0], args[1:], allow_python_layers=allow)
    except ConvnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

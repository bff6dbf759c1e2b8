#!/usr/bin/env python3
"""Regenerate convnet_io/caffe/proto/caffe_pb2.py (and .pyi) from caffe.proto, and
convnet_io/caffe2/proto/caffe2_pb2.py (and .pyi) from caffe2.proto.

Run from anywhere inside the repository:

    python tools/gen_proto.py          # rewrite the generated files
    python tools/gen_proto.py --check  # exit 1 if the committed files are stale

Needs grpcio-tools (it bundles protoc). The protobuf runtime version that the
generated module demands is the one this grpcio-tools release was built
against; see the "Protobuf Python Version" line in caffe_pb2.py.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "convnet_io" / "caffe" / "proto"
PROTO_FILE = PROTO_DIR / "caffe.proto"
GENERATED = ("caffe_pb2.py", "caffe_pb2.pyi")
# Every schema: (folder, .proto file). The first is Caffe's; the Caffe2 subset sits beside it.
SCHEMAS = ((PROTO_DIR, PROTO_FILE),
           (REPO_ROOT / "convnet_io" / "caffe2" / "proto", REPO_ROOT / "convnet_io" / "caffe2" / "proto" / "caffe2.proto"))
VERSION_PREFIX = "# Protobuf Python Version:"
MAX_LINE = 160
MAX_DIFF_LINES = 40


def _generated(proto_file: Path) -> tuple[str, str]:
    return (f"{proto_file.stem}_pb2.py", f"{proto_file.stem}_pb2.pyi")


def _protoc(out_dir: Path, proto_dir: Path = PROTO_DIR, proto_file: Path = PROTO_FILE) -> None:
    """Run grpc_tools' bundled protoc, writing <name>_pb2.py/.pyi to out_dir."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("gen_proto: grpcio-tools is not installed (pip install grpcio-tools)")

    # Paths are given relative to the proto dir so the generated files do not
    # embed an absolute, machine-specific path.
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(proto_file),
    ]
    status = protoc.main(args)
    if status != 0:
        sys.exit(f"gen_proto: protoc failed with status {status}")


def generate() -> int:
    for proto_dir, proto_file in SCHEMAS:
        _protoc(proto_dir, proto_dir, proto_file)
        for name in _generated(proto_file):
            print(f"wrote {(proto_dir / name).relative_to(REPO_ROOT)}")
    return 0


def _gencode_version(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(VERSION_PREFIX):
            return line[len(VERSION_PREFIX):].strip()
    return None


def check() -> int:
    return max(_check(proto_dir, proto_file) for proto_dir, proto_file in SCHEMAS)


def _check(proto_dir: Path, proto_file: Path) -> int:
    generated = _generated(proto_file)
    stale = []
    fresh_version = committed_version = None
    with tempfile.TemporaryDirectory(prefix="convnet-gen-proto-") as tmp:
        tmp_dir = Path(tmp)
        _protoc(tmp_dir, proto_dir, proto_file)
        fresh_version = _gencode_version((tmp_dir / generated[0]).read_text(encoding="utf-8"))
        committed_py = proto_dir / generated[0]
        if committed_py.exists():
            committed_version = _gencode_version(committed_py.read_text(encoding="utf-8"))
        for name in generated:
            fresh = (tmp_dir / name).read_text(encoding="utf-8")
            committed_path = proto_dir / name
            if not committed_path.exists():
                stale.append((name, "missing", ""))
                continue
            committed = committed_path.read_text(encoding="utf-8")
            if committed != fresh:
                diff = "".join(
                    difflib.unified_diff(
                        committed.splitlines(keepends=True),
                        fresh.splitlines(keepends=True),
                        fromfile=f"committed/{name}",
                        tofile=f"regenerated/{name}",
                        n=1,
                    )
                )
                stale.append((name, "differs", diff))
    if stale:
        for name, why, diff in stale:
            print(
                f"gen_proto --check: {(proto_dir / name).relative_to(REPO_ROOT)} {why} from what "
                f"{proto_file.name} generates.",
                file=sys.stderr,
            )
            if diff:
                # The serialized descriptor is one very long line; clip lines.
                lines = [
                    line if len(line) <= MAX_LINE else line[:MAX_LINE] + " ...[clipped]"
                    for line in diff.splitlines()
                ]
                print("\n".join(lines[:MAX_DIFF_LINES]), file=sys.stderr)
                if len(lines) > MAX_DIFF_LINES:
                    print(
                        f"... ({len(lines) - MAX_DIFF_LINES} more diff lines)",
                        file=sys.stderr,
                    )
        if fresh_version and committed_version and fresh_version != committed_version:
            print(
                f"Note: the committed files were generated by protoc for protobuf "
                f"{committed_version}, but this grpcio-tools generates for "
                f"{fresh_version}; use the grpcio-tools release the project pins.",
                file=sys.stderr,
            )
        print(
            "Run `python tools/gen_proto.py` from the repository root to "
            "regenerate (a different grpcio-tools version also changes the output).",
            file=sys.stderr,
        )
        return 1
    print(f"gen_proto --check: the files generated from {proto_file.name} are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and fail if the committed files differ",
    )
    args = parser.parse_args(argv)
    return check() if args.check else generate()


if __name__ == "__main__":
    sys.exit(main())

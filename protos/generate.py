"""Generate the Python gRPC stubs of the judgeopt contract; the only protoc invocation in the repository.

    python protos/generate.py           # regenerate protos/judgeopt/v1/*_pb2*.py(i)
    python protos/generate.py --check   # exit 1 if the committed stubs differ from a fresh generation

protoc runs with ``-I protos`` so the .proto import paths stay ``judgeopt/v1/…`` (what other languages see), and the
generated ``from judgeopt.v1 import …`` lines are already the installed package path (``judgeopt/v1`` links here).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "judgeopt" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every .proto file into ``out_root/judgeopt/v1``; returns the generated files."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    scripts = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside the interpreter, PATH or not
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={scripts / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={scripts / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / "judgeopt" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed stubs instead of writing")
    args = parser.parse_args()
    if not args.check:
        for path in generate(PROTO_ROOT):
            print(f"wrote {path.relative_to(PROTO_ROOT.parent)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        drift = [
            p.name
            for p in fresh
            if not filecmp.cmp(p, PACKAGE_DIR / p.name, shallow=False)
            if (PACKAGE_DIR / p.name).exists()
        ]
        missing = [p.name for p in fresh if not (PACKAGE_DIR / p.name).exists()]
    if drift or missing:
        print(
            f"generated stubs drifted from the .proto files: {sorted(drift + missing)}; "
            "run `python protos/generate.py`",
            file=sys.stderr,
        )
        return 1
    print("generated stubs match the .proto files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

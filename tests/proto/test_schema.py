"""The checked-in protobuf modules must match wxnet.proto (regenerate with `make proto`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"--python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            str(SRC / "wxnet/proto/wxnet.proto"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    for name in ("wxnet_pb2.py", "wxnet_pb2.pyi"):
        fresh = (tmp_path / "wxnet/proto" / name).read_text()
        assert fresh == (SRC / "wxnet/proto" / name).read_text(), f"{name} is stale: make proto"

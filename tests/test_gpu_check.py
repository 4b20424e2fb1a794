"""ops/gpu-check.sh measures nothing and says why where torch sees no GPU."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run the benches")
def test_gpu_check_exits_with_one_clear_line_without_a_gpu(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(["bash", "ops/gpu-check.sh", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stdout == "" and run.stderr.count("\n") == 1
    assert "no CUDA device" in run.stderr and "nothing was measured" in run.stderr
    assert not out.exists()

"""benchmarks/gpu_check.py: the CPU smoke run (toy sizes of the configs/arch architectures, every stage), and the
CUDA/bf16 path on a GPU (`-m gpu`)."""
from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark


def _module():
    return load_benchmark("gpu_check")


def test_gpu_check_cpu_tiny_smoke(capsys):
    assert _module().main(["--device", "cpu", "--tiny"]) == 0
    out = capsys.readouterr().out
    for check in ("9B direct scoring, % of roofline", "9B d(reward)/d(pixels) s", "27B GDSO step peak",
                  "27B RISD teacher cache peak"):
        assert check in out
    assert "FAIL" not in out and "OOM" not in out
    # the GDSO stage ran the shipped per-rank micro-batch: 1 prompt group × 4 images × 4 dims × G (2 in --tiny)
    assert '"chains": 32' in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_check_cuda_bf16_tiny(capsys):
    mod = _module()
    assert mod.main(["--device", "cuda", "--tiny"]) == 0
    sc = mod.build_scorer("qwen3_5_9b", "cuda", True, 64)
    assert sc.model.dtype == torch.bfloat16 and sc.model.device.type == "cuda"
    out = sc.score(["a red circle"], torch.rand(1, 3, 64, 64, device="cuda"))
    assert torch.isfinite(out.probs).all() and torch.allclose(out.probs.sum(-1), torch.ones(1, 4), atol=1e-3)

"""Dense (no sparsity) bf16 tensor-core peaks of common data-centre GPUs, in TFLOP/s, from the vendors' data sheets:
the denominator of the model FLOPs utilisation (MFU). Matched on torch.cuda.get_device_name(), first match wins
(so "A100" is tried before "A10")."""
from __future__ import annotations

from typing import Optional

BF16_DENSE_TFLOPS = (  # (name fragment, TFLOP/s)
    ("B200", 2250.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM5 (the name reads "NVIDIA H100 80GB HBM3")
    ("H800", 989.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("A30", 165.0),
)


def bf16_peak_tflops(device_name: str) -> Optional[float]:
    for fragment, tflops in BF16_DENSE_TFLOPS:
        if fragment in device_name:
            return tflops
    return None

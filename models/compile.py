"""``torch.compile`` (inductor) of a detector's dense network, in place: ``--compile`` of train.py and eval.py.

Only the backbone, encoder and decoder are compiled (``nn.Module.compile``: in place, so the state dict,
checkpoints and DDP see the same module and parameter names). The rest stays eager on purpose: image
padding, the matcher and the loss see data-dependent shapes (the number of boxes changes every batch,
recompiling or breaking the graph), and post-processing is top-k and NMS. Inductor needs a C++ compiler
on CPU. Measured against eager channels_last in docs/deployment.md (bench/bench_compile.py).
"""
from __future__ import annotations

from torch import nn

COMPILED_PARTS = ("backbone", "encoder", "decoder")
BACKEND = "inductor"  # torch.compile's backend (the tests use "eager": the same tracing, no code generation)


def compile_model(model: nn.Module, backend=None) -> nn.Module:
    """``model`` with its dense parts compiled in place (returned for chaining); ``backend``: torch.compile's
    (default :data:`BACKEND`)."""
    for name in COMPILED_PARTS:
        getattr(model, name).compile(backend=backend or BACKEND)
    return model

"""A file that is not a checkpoint, or a pickle that would run code, gets a message that says so (never
torch's advice to load with weights_only=False), and no code of the file runs."""
from __future__ import annotations

import pickle
import random

import pytest
import torch

from tests.conftest import REPO
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.script import run_script

NOT_A_CHECKPOINT = "not a PyTorch checkpoint (not a zip archive or truncated)"


class _TouchesAMarker:
    """Unpickling this object calls ``open(marker, "w")``: the file appears if the loader runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _load_error(path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "weights_only" not in message and "\n" not in message
    return message


def test_truncated_and_random_files_are_not_checkpoints(tmp_path):
    good = tmp_path / "good.pth"
    save_checkpoint(good, {"model": {"w": torch.arange(1000.0)}})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.pth"
    noise.write_bytes(random.Random(0).randbytes(4096))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (truncated, noise, empty):
        assert _load_error(path) == f"{path}: {NOT_A_CHECKPOINT}"
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.arange(1000.0))


@pytest.mark.parametrize("kind", ["torch.save", "pickle protocol 2", "pickle protocol 4"])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"model": _TouchesAMarker(marker)}
    if kind == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(kind[-1])))
    assert _load_error(path) == f"{path}: refused: it would run code (global io.open)"
    assert not marker.exists()


def test_eval_and_test_scripts_end_with_the_message(tmp_path, capsys):
    import eval as eval_script
    import test as test_script

    truncated = tmp_path / "last.pth"
    save_checkpoint(truncated, {"model": {"w": torch.zeros(100)}})
    truncated.write_bytes(truncated.read_bytes()[:100])
    for main, argv in [(eval_script.main, ["--weight", str(truncated)]),
                       (test_script.main, ["--weight", str(truncated), "--input", str(REPO / "docs")])]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            run_script(lambda: main(argv))
        # run_script prints the line and exits 2; a script's own SystemExit(message) exits 1 with it
        code = e.value.code
        line = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
        assert code in (2, line) and line == f"error: {truncated}: {NOT_A_CHECKPOINT}"

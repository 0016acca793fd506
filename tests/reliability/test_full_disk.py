"""A full disk stops the stage with one line naming the artifact root and the bytes the write needed,
publishes nothing and keeps the last good checkpoint, from which a rerun with space resumes.

In this process (``flows.cli.main``), so that the checkpoint writer can be made to fail as torch.save
does on a full disk: ``RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ...``.
"""

from __future__ import annotations

import errno
from collections import namedtuple

from reliability._helpers import complete, manifest, run_args, scratch_dirs

import storage.checkpoints
import storage.space

Usage = namedtuple("Usage", "total used free")


def test_full_disk_while_saving_a_checkpoint_names_root_and_bytes_and_a_rerun_resumes(
        demo_data, tmp_path, monkeypatch, capsys):
    from flows.cli import main
    from storage.checkpoints import load_checkpoint

    real_save, calls = storage.checkpoints.torch.save, []

    def save_until_the_disk_is_full(obj, f):
        calls.append(1)
        if len(calls) == 1:  # train_diffusion's step-2 train_state.pt goes through
            return real_save(obj, f)
        f.write(b"PK\x03\x04")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1216 vs 1152")

    monkeypatch.setattr(storage.checkpoints.torch, "save", save_until_the_disk_is_full)
    monkeypatch.setattr(storage.space.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 512, 512))
    root = tmp_path / "artifacts"
    assert main(run_args(root, demo_data)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("realnet: error: "), err
    line = err[0]
    assert "train_diffusion demo/brick: out of disk space under artifact root " + str(root) in line, line
    assert "ema.pt: it needed" in line and "bytes, 512 bytes free" in line and "inline_container" not in line
    assert not complete(root, "train_diffusion")
    (scratch,) = scratch_dirs(root, "train_diffusion")
    assert load_checkpoint(scratch / "train_state.pt")["step"] == 2  # the last good checkpoint
    assert not list(scratch.glob("*.tmp")) and not (scratch / "ema.pt").exists()

    monkeypatch.undo()  # space again
    assert main([*run_args(root, demo_data), "--json"]) == 0, capsys.readouterr().err
    assert manifest(root, "train_diffusion")["meta"]["resumed_from_step"] == 2


def test_enospc_from_any_write_of_a_stage_is_named(demo_data, tmp_path, monkeypatch, capsys):
    """A PNG (written by the stage itself, not by the store) that hits a quota: the same one line."""
    from flows.cli import main

    def quota(path, image):
        err = OSError(errno.EDQUOT, "Disk quota exceeded", str(path))
        err.needed = 12345
        raise err

    monkeypatch.setattr("stages.train_diffusion.write_png", quota)
    root = tmp_path / "artifacts"
    assert main(run_args(root, demo_data)) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert f"out of disk space under artifact root {root}" in line and "samples.png: it needed 12,345 bytes" in line
    assert not complete(root, "train_diffusion")

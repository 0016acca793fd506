"""The process side of the reliability tests: run ``realnet`` (``flows.cli.main``) in a child process.

Children are forked from a multiprocessing forkserver that has imported the pipeline once, so a run
starts in a fraction of a second instead of paying the ~15 s import of torch, zarr and Prefect every
time; each child is still a separate process that a test can SIGKILL at any moment. With
``REALNET_RELIABILITY_EXEC=1`` every run is a fresh interpreter (``python _child.py ...``) instead.

A ``fault`` makes the child kill itself with SIGKILL at one precise point of publishing an artifact,
which no polling from outside could hit reliably:

- ``publish-after-manifest:<stage>``: the manifest is written into the staging folder, the folder is
  not yet renamed into place;
- ``publish-mid-manifest:<stage>``: the manifest's temp file is written, not yet renamed to
  ``manifest.json``.
"""

from __future__ import annotations

import os
import signal
import sys

PRELOAD = ["flows.cli", "flows.runner", "flows.pipeline", "stages.dag", "storage.store"]


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_fault(fault: str | None) -> None:
    if not fault:
        return
    from storage import store as store_mod

    kind, stage = fault.split(":", 1)
    original = store_mod.Store._publish_local

    if kind == "publish-after-manifest":
        def publish(self, ref, staging, manifest):
            if ref.stage != stage:
                return original(self, ref, staging, manifest)
            store_mod.write_json_atomic(staging / store_mod.MANIFEST, manifest)
            _kill_self()

    elif kind == "publish-mid-manifest":
        real_replace = os.replace

        def publish(self, ref, staging, manifest):
            if ref.stage != stage:
                return original(self, ref, staging, manifest)

            def replace(src, dst, *a, **k):
                if os.path.basename(os.fspath(dst)) == store_mod.MANIFEST:
                    _kill_self()
                return real_replace(src, dst, *a, **k)

            store_mod.os.replace = replace  # the child dies here, so nothing needs restoring
            return original(self, ref, staging, manifest)

    else:
        raise ValueError(f"unknown fault {fault!r}")
    store_mod.Store._publish_local = publish


def run_cli(argv: list[str], out_dir: str, fault: str | None = None) -> None:
    """Body of a forked child: stdout/stderr into files, then ``sys.exit(realnet ...)``."""
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        f = os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    import torch

    torch.set_num_threads(1)  # 2 shared cores: more threads only fight each other
    install_fault(fault)
    from flows.cli import main

    sys.exit(main(argv))


if __name__ == "__main__":  # REALNET_RELIABILITY_EXEC=1: python _child.py OUT_DIR FAULT -- realnet args
    out, fault_arg, sep, *args = sys.argv[1:]
    assert sep == "--"
    run_cli(args, out, fault_arg or None)

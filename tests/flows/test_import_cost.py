"""A fully cached rerun computes no metric and builds no backbone, so it must not pay their imports."""

import subprocess
import sys


def test_the_pipeline_imports_without_torchvision_sklearn_or_scipy():
    code = ("import sys, flows.pipeline, flows.cli; "
            "print(sorted(m for m in ('torchvision', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

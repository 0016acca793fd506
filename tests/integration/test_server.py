"""A real Prefect server on PostgreSQL, `realnet serve`, and `prefect deployment run` for both deployments.

The set-up mirrors docker-compose: PostgreSQL backs `prefect server start` on a loopback port, and
`realnet serve` (instead of a worker) executes the flow runs. The single-category deployment and
`realnet/all-categories` (its category list overridden to the demo categories) run side by side
on one artifact root, so they also share the brick artifacts through the store's locks.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from server_utils import (
    REPO_ROOT,
    drop_database,
    fresh_database,
    postgres_unavailable_reason,
    postgres_url,
    prefect_command,
    start_prefect_server,
)

from storage.tables import load

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.prefect, pytest.mark.timeout(900)]

RUN_TIMEOUT_S = 480
DEPLOYMENTS = ("realnet/category", "realnet/all-categories")


def _api(api_url: str, path: str, body: dict | None = None) -> dict | None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{api_url}{path}", data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def _realnet_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("realnet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "<no log>"


@pytest.fixture
def server(tmp_path):
    url = postgres_url()
    if url is None:
        pytest.skip(postgres_unavailable_reason())
    db = fresh_database(url)
    handle = start_prefect_server(tmp_path, db)
    try:
        yield handle
    finally:
        handle.stop()
        try:
            drop_database(db)
        except Exception:  # a leftover test database must not fail the test
            pass


def test_served_deployments_run_one_category_and_all_categories(server, tmp_path, tiny_overrides):
    artifacts = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(server.env, REALNET_ARTIFACTS=str(artifacts), PREFECT_SERVER_ANALYTICS_ENABLED="false")

    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as log:
        serve = subprocess.Popen([*_realnet_cmd(), "serve"], cwd=REPO_ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not all(_api(server.api_url, f"/deployments/name/{d}") for d in DEPLOYMENTS):
            assert serve.poll() is None, f"realnet serve exited with {serve.returncode}:\n{_tail(serve_log)}"
            assert time.monotonic() < deadline, f"deployments not registered in 120 s:\n{_tail(serve_log)}"
            time.sleep(1)

        runs = {}
        for name, params in (
            ("realnet/category", {"categories": ["brick"], "overrides": tiny_overrides}),
            ("realnet/all-categories", {"categories": ["brick", "grass"], "profile": "demo",
                                        "overrides": tiny_overrides}),
        ):
            proc = subprocess.run([*prefect_command(), "deployment", "run", name, "--params", json.dumps(params)],
                                  cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            match = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
            assert match, proc.stdout
            runs[name] = match.group(1)

        deadline = time.monotonic() + RUN_TIMEOUT_S
        states: dict[str, str] = {}
        while True:
            states = {name: _api(server.api_url, f"/flow_runs/{rid}")["state_type"] for name, rid in runs.items()}
            if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
                break
            assert serve.poll() is None, f"realnet serve exited with {serve.returncode}:\n{_tail(serve_log)}"
            assert time.monotonic() < deadline, f"flow runs not finished in {RUN_TIMEOUT_S} s: {states}\n" \
                                                f"{_tail(serve_log)}"
            time.sleep(3)
        assert states == dict.fromkeys(DEPLOYMENTS, "COMPLETED"), f"{states}\n{_tail(serve_log, 120)}"

        # The parameters reached the flow: the demo profile's categories, in one artifact root.
        params = {name: _api(server.api_url, f"/flow_runs/{rid}")["parameters"] for name, rid in runs.items()}
        assert params["realnet/all-categories"]["categories"] == ["brick", "grass"]
        assert params["realnet/all-categories"]["profile"] == "demo"

        metrics = load("metrics", str(artifacts))
        assert sorted(set(metrics["category"])) == ["brick", "grass"]
        assert set(metrics["dataset"]) == {"demo"}
        assert metrics[["image_auroc", "pixel_auroc", "pro"]].notna().all().all()
        # brick was evaluated once, by whichever run took the lock first, and reused by the other
        every = load("metrics", str(artifacts), latest=False)
        assert len(every[every.category == "brick"]) == 1

        artifacts_api = _api(server.api_url, "/artifacts/filter", {"artifacts": {"key": {"any_": ["realnet-metrics"]}}})
        assert {a["flow_run_id"] for a in artifacts_api} == set(runs.values())
    finally:
        _stop_group(serve)

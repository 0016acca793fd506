"""Device slots: N devices run N tasks at once, one device never runs two."""

import threading
import time

import pytest

from flows.gpu import ComputeThread, DevicePool, visible_devices


def _hammer(pool: DevicePool, tasks: int) -> list[str]:
    seen, lock = [], threading.Lock()
    active: dict[str, int] = {}

    def work():
        with pool.acquire() as dev:
            with lock:
                active[dev] = active.get(dev, 0) + 1
                assert active[dev] == 1, f"{dev} held twice"
                seen.append(dev)
            time.sleep(0.02)
            with lock:
                active[dev] -= 1

    threads = [threading.Thread(target=work) for _ in range(tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


def test_four_devices_run_four_tasks_at_once_and_never_share_one():
    pool = DevicePool(["cuda:0", "cuda:1", "cuda:2", "cuda:3"])
    seen = _hammer(pool, 16)
    assert len(seen) == 16
    assert pool.peak == 4
    assert set(seen) == set(pool.devices)


def test_cpu_only_pool_runs_one_task_at_a_time():
    pool = DevicePool(["cpu"])
    _hammer(pool, 6)
    assert pool.peak == 1


def test_acquire_times_out_when_every_device_is_held():
    pool = DevicePool(["cuda:0"])
    with pool.acquire():
        with pytest.raises(TimeoutError, match="cuda:0"):
            with pool.acquire(timeout=0.05):
                pass


def test_visible_devices_fall_back_to_cpu_without_cuda():
    import torch

    devices = visible_devices()
    if not torch.cuda.is_available():
        assert devices == ["cpu"]
    assert visible_devices(gpus=0) == ["cpu"]


def test_every_job_of_a_device_runs_on_that_devices_one_compute_thread():
    # One thread per device keeps one OpenMP team per device (see flows/gpu.py): stages submitted
    # from many task threads must still all execute on the same thread.
    pool = DevicePool(["cuda:0", "cuda:1"])
    ran: list[tuple[str, str]] = []
    lock = threading.Lock()

    def job(device: str) -> str:
        with lock:
            ran.append((device, threading.current_thread().name))
        time.sleep(0.01)
        return device

    callers = [threading.Thread(target=pool.run, args=(job,)) for _ in range(12)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(ran) == 12
    threads = {dev: {name for d, name in ran if d == dev} for dev, _ in ran}
    assert threads == {dev: {f"compute-{dev}"} for dev in threads}
    assert all(name != threading.current_thread().name for _, name in ran)


def test_run_returns_the_result_and_reraises_the_jobs_error():
    pool = DevicePool(["cpu"])
    assert pool.run(lambda device: f"ran on {device}") == "ran on cpu"

    def fail(device: str) -> None:
        raise ValueError(f"bad input on {device}")

    with pytest.raises(ValueError, match="bad input on cpu"):
        pool.run(fail)
    assert pool.in_use == set() and pool.run(lambda device: 1) == 1  # the slot and its thread survive


def test_a_job_that_runs_another_job_on_its_own_thread_does_not_deadlock():
    worker = ComputeThread("compute-test")
    assert worker.run(lambda: worker.run(lambda: threading.current_thread().name)) == "compute-test"

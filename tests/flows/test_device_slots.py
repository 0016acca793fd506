"""Device slots: N devices run N tasks at once, one device never runs two."""

import threading
import time

import pytest

from flows.device_slots import ComputeThread, DevicePool, visible_devices


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
    # One thread per device keeps one OpenMP team per device (see flows/device_slots.py): stages submitted
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


def test_two_processes_pools_never_hold_the_same_gpu_at_once(tmp_path):
    # Two served flow runs are two processes with a pool each; the lock file is what they share.
    # Two pools in one process stand in for them: the lock is an O_EXCL file either way.
    def same_gpu(device: str) -> str:
        return "gpu-test-uuid"

    first = DevicePool(["cuda:0"], identity=same_gpu, lock_dir=tmp_path, poll=0.01)
    second = DevicePool(["cuda:0"], identity=same_gpu, lock_dir=tmp_path, poll=0.01)
    with first.acquire():
        with pytest.raises(TimeoutError, match="held by other processes"):
            with second.acquire(timeout=0.2):
                pass
    with second.acquire(timeout=1.0) as device:  # free again once the first run let go
        assert device == "cuda:0"
        assert (tmp_path / "gpu-test-uuid.lock").is_file()
    assert not (tmp_path / "gpu-test-uuid.lock").exists()


def test_a_run_waiting_for_a_gpu_gets_it_when_the_other_process_releases_it(tmp_path):
    first = DevicePool(["cuda:0"], identity=lambda d: "gpu-x", lock_dir=tmp_path, poll=0.01)
    second = DevicePool(["cuda:0"], identity=lambda d: "gpu-x", lock_dir=tmp_path, poll=0.01)
    order: list[str] = []
    with first.acquire():
        waiter = threading.Thread(target=lambda: second.run(lambda d: order.append("second")))
        waiter.start()
        time.sleep(0.1)
        order.append("first done")
    waiter.join(timeout=5)
    assert order == ["first done", "second"]


def test_a_gpu_busy_elsewhere_does_not_block_a_free_one(tmp_path):
    other = DevicePool(["cuda:0"], identity=lambda d: f"gpu-{d[-1]}", lock_dir=tmp_path, poll=0.01)
    pool = DevicePool(["cuda:0", "cuda:1"], identity=lambda d: f"gpu-{d[-1]}", lock_dir=tmp_path, poll=0.01)
    with other.acquire():
        with pool.acquire(timeout=1.0) as device:
            assert device == "cuda:1"


def test_cpu_slots_take_no_machine_lock(tmp_path):
    with DevicePool(["cpu"], lock_dir=tmp_path).acquire():
        with DevicePool(["cpu"], lock_dir=tmp_path).acquire(timeout=0.1):
            assert list(tmp_path.iterdir()) == []


def test_visible_devices_follow_runtime_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_devices(None, "auto") == ["cuda:0", "cuda:1"]
    assert visible_devices(1, "auto") == ["cuda:0"]
    assert visible_devices(None, "cpu") == ["cpu"]  # the user asked for the CPU, GPUs or not
    assert visible_devices(None, "cuda:1") == ["cuda:1"]
    with pytest.raises(RuntimeError, match=r"runtime.device='cuda:2' but only 2 CUDA device"):
        visible_devices(None, "cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert visible_devices(None, "auto") == ["cpu"]
    with pytest.raises(RuntimeError, match=r"runtime.device='cuda' but no CUDA device is visible"):
        visible_devices(None, "cuda")

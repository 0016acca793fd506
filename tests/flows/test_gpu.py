"""Device slots: N devices run N tasks at once, one device never runs two."""

import threading
import time

import pytest

from flows.gpu import DevicePool, visible_devices


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

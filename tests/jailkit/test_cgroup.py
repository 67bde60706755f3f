"""The cgroup readers against this host's own cgroups (v1 or v2)."""

from __future__ import annotations

import time

from nixjail.jailkit.cgroup import own_cpu_cgroup, own_memory_cgroup


def test_the_cpu_reader_counts_this_process() -> None:
    cgroup = own_cpu_cgroup()
    assert cgroup is not None, "no CPU accounting cgroup found for this process"
    before = cgroup.usage_ns()
    assert before is not None and before > 0
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    after = cgroup.usage_ns()
    assert after is not None and after - before >= 40_000_000


def test_the_memory_reader() -> None:
    cgroup = own_memory_cgroup()
    assert cgroup is not None, "no memory cgroup found for this process"
    assert cgroup.usage_bytes() and cgroup.usage_bytes() > 0
    resident = cgroup.resident_bytes()
    assert resident is not None and resident > 0
    assert cgroup.oom_kills() is not None
    peak = cgroup.peak_bytes()
    assert peak is None or peak >= resident // 2

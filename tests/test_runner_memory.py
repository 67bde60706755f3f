"""The container's memory limit, at creation and for each stage (runner/worker.py)."""

from __future__ import annotations

import pytest

from nixjail import docker as nj_docker
from nixjail.models import ResolvedLimits, ResolvedStageLimits
from nixjail.runner.worker import (
    INIT_MEMORY_MIB,
    NSJAIL_MEMORY_MIB,
    created_memory_mib,
    stage_memory_mib,
)


def stage(memory_mib: int) -> ResolvedLimits:
    return ResolvedLimits(wall_time_s=5, cpu_time_s=5, memory_mib=memory_mib, processes=32,
                          output_kib=64, file_size_kib=1024)


LIMITS = ResolvedStageLimits(dependencies=stage(512), compile=stage(300), run=stage(100))


@pytest.fixture
def spec() -> nj_docker.ContainerSpec:
    spec = nj_docker.ContainerSpec(image="i", name="n", labels={}, memory_mib=0, pids=64,
                                   cpus=1, work_dir_mib=256, work_dir_inodes=32768,
                                   store_mib=2048, store_inodes=131072)
    spec.memory_mib = created_memory_mib(spec, LIMITS)
    return spec


def test_the_created_limit_holds_every_tmpfs_full_beside_the_largest_stage(spec) -> None:
    files_mib = 256 + 2048 + nj_docker.CONTAINER_TMP_MIB
    inodes_mib = -(-(32768 + 131072 + nj_docker.CONTAINER_TMP_INODES) // 1024)
    assert nj_docker.tmpfs_mib(spec) == files_mib + inodes_mib
    assert spec.memory_mib == 512 + NSJAIL_MEMORY_MIB + INIT_MEMORY_MIB + files_mib + inodes_mib


def test_a_stage_gets_its_own_memory_over_what_is_held_and_room_for_the_work_dir(spec) -> None:
    held_kib = 70 * 1024
    room_mib = 256 + nj_docker.CONTAINER_TMP_MIB + -(-(32768 + nj_docker.CONTAINER_TMP_INODES)
                                                     // 1024)
    assert stage_memory_mib(spec, LIMITS, "run", held_kib) == (
        70 + room_mib + 100 + NSJAIL_MEMORY_MIB)
    assert stage_memory_mib(spec, LIMITS, "compile", held_kib) == (
        70 + room_mib + 300 + NSJAIL_MEMORY_MIB)


@pytest.mark.parametrize("figure", [10**12, 2**62, -5, None, "lots", 1.5])
def test_a_figure_from_inside_the_container_never_raises_it_past_its_creation(spec,
                                                                             figure) -> None:
    assert stage_memory_mib(spec, LIMITS, "run", figure) <= spec.memory_mib


def test_a_private_store_build_gets_the_whole_container(spec) -> None:
    assert stage_memory_mib(spec, LIMITS, "dependencies", 1024) == spec.memory_mib

"""Thread pools are sized to the CPUs a process may use, a container's CPU quota included.

Each test lays out the files a Linux process reads about its cgroups (``/proc/self/cgroup``,
``/proc/self/mountinfo`` and the cgroup folders), as the kernel writes them in a container.
"""

from __future__ import annotations

import os
from pathlib import Path

from appliance.cpus import cgroup_cpu_quota, quota_bound_cpus, usable_cpus

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = (
    "31 23 0:27 {root} /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
    "32 23 0:28 {root} /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
)
PROC_MOUNT = "22 1 0:20 / /proc rw,nosuid - proc proc rw\n"


def machine(tmp_path: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    """Write a process's view of its cgroups under ``tmp_path`` and return that root."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    (tmp_path / "proc/self/mountinfo").write_text(PROC_MOUNT + mountinfo)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return tmp_path


def may_run_on() -> int:
    return len(os.sched_getaffinity(0))


def test_a_container_quota_of_half_a_cpu_allows_one_thread(tmp_path: Path) -> None:
    root = machine(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "50000 100000"})
    assert cgroup_cpu_quota(root) == 0.5
    assert usable_cpus(root) == 1


def test_a_fractional_quota_rounds_up_and_never_exceeds_the_cpus_the_process_may_run_on(
    tmp_path: Path,
) -> None:
    root = machine(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "150000 100000"})
    assert cgroup_cpu_quota(root) == 1.5
    assert usable_cpus(root) == min(2, may_run_on())
    root = machine(
        tmp_path / "big", "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "6400000 100000"}
    )
    assert usable_cpus(root) == may_run_on()
    assert quota_bound_cpus(root) is None


def test_without_a_quota_every_cpu_the_process_may_run_on_counts(tmp_path: Path) -> None:
    root = machine(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root) is None
    assert quota_bound_cpus(root) is None
    assert usable_cpus(root) == may_run_on()


def test_a_parents_quota_binds_its_children(tmp_path: Path) -> None:
    root = machine(
        tmp_path,
        "0::/appliance/server\n",
        V2_MOUNT,
        {
            "sys/fs/cgroup/appliance/cpu.max": "100000 100000",
            "sys/fs/cgroup/appliance/server/cpu.max": "max 100000",
        },
    )
    assert cgroup_cpu_quota(root) == 1.0
    assert usable_cpus(root) == 1


def test_the_tightest_of_nested_quotas_counts(tmp_path: Path) -> None:
    root = machine(
        tmp_path,
        "0::/a/b\n",
        V2_MOUNT,
        {
            "sys/fs/cgroup/cpu.max": "400000 100000",
            "sys/fs/cgroup/a/cpu.max": "300000 100000",
            "sys/fs/cgroup/a/b/cpu.max": "350000 100000",
        },
    )
    assert cgroup_cpu_quota(root) == 3.0


def test_cgroup_v1_in_a_container_without_a_cgroup_namespace(tmp_path: Path) -> None:
    # The process sees the host's path of its cgroup, and a mount whose root is that path.
    root = machine(
        tmp_path,
        "5:memory:/docker/4f2a\n4:cpu,cpuacct:/docker/4f2a\n1:name=systemd:/docker/4f2a\n",
        V1_MOUNTS.format(root="/docker/4f2a"),
        {
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "25000",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824",
        },
    )
    assert cgroup_cpu_quota(root) == 0.25
    assert usable_cpus(root) == 1


def test_cgroup_v1_on_a_host_reads_the_process_folder_and_its_parents(tmp_path: Path) -> None:
    root = machine(
        tmp_path,
        "4:cpu,cpuacct:/batch/job\n",
        V1_MOUNTS.format(root="/"),
        {
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
            "sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_quota_us": "-1",
            "sys/fs/cgroup/cpu,cpuacct/batch/cpu.cfs_period_us": "100000",
            "sys/fs/cgroup/cpu,cpuacct/batch/job/cpu.cfs_quota_us": "100000",
            "sys/fs/cgroup/cpu,cpuacct/batch/job/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_cpu_quota(root) == 1.0
    root = machine(
        tmp_path / "unlimited",
        "4:cpu,cpuacct:/\n",
        V1_MOUNTS.format(root="/"),
        {
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000",
        },
    )
    assert cgroup_cpu_quota(root) is None


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == may_run_on()
    # Listed but unreadable (a mount the process cannot see into): no quota either.
    root = machine(tmp_path / "hidden", "0::/\n", V2_MOUNT, {})
    assert cgroup_cpu_quota(root) is None

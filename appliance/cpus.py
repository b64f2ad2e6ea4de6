"""How many CPUs this process can keep busy: the size of its thread pools.

``os.cpu_count()`` counts the machine's CPUs and ``os.sched_getaffinity`` the ones the process may
be scheduled on, but a container started with ``docker run --cpus 2`` (or a Kubernetes CPU
limit) on a 64-core host may run on all 64 for at most two CPUs' worth of time: its cgroup's
CFS quota. Pools sized to 64 there spend the quota switching between threads that wait for it.
The quota is read from the cgroup files of the process and of every cgroup above it (a parent's
limit binds its children), in cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


def usable_cpus(root: Path = Path("/")) -> int:
    """Return the CPUs the process may run on, fewer when a cgroup's quota allows less time.

    Args:
        root: Where ``/proc`` and the cgroup mounts are found (the tests give a tree of their own).

    """
    return quota_bound_cpus(root) or len(os.sched_getaffinity(0))


def quota_bound_cpus(root: Path = Path("/")) -> int | None:
    """Return the CPUs a cgroup's quota allows when that is fewer than the process may run on.

    For runtimes that choose their own default (ONNX Runtime and torch take the physical cores
    the process may run on, blind to quotas): they keep it unless a quota allows less. A quota
    of 1.5 CPUs counts as 2, so that a pool can use all of it.

    Returns:
        That many CPUs, or ``None`` when no quota is below the CPUs the process may run on.

    """
    quota = cgroup_cpu_quota(root)
    if quota is None:
        return None
    allowed = max(1, math.ceil(quota))
    return allowed if allowed < len(os.sched_getaffinity(0)) else None


def cgroup_cpu_quota(root: Path = Path("/")) -> float | None:
    """Return the tightest CPU quota of the process's cgroups, in CPUs, or ``None`` for none."""
    try:
        memberships = (root / "proc/self/cgroup").read_text().splitlines()
        mounts = (root / "proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    quotas = [
        quota
        for folder, version in _cpu_cgroup_folders(root, memberships, mounts)
        if (quota := _read_quota(folder, version)) is not None
    ]
    return min(quotas, default=None)


def _cpu_cgroup_folders(
    root: Path, memberships: list[str], mounts: list[str]
) -> Iterator[tuple[Path, int]]:
    """Yield the folder of each cgroup whose CPU quota applies to the process, with its version.

    A membership line is ``id:controllers:path``: cgroup v2's has id 0 and no controllers, v1's
    CPU controller lists ``cpu``. A mountinfo line gives the part of the hierarchy a mount shows
    (its root) and where; the process's folder is its path relative to that root. A container
    without a cgroup namespace sees the host's path (``/docker/<id>``) under a mount whose root
    is that path; when the path is not under the mount's root, the mount's own folder is the
    process's cgroup as far as this process can see.
    """
    paths: dict[int, PurePosixPath] = {}
    for line in memberships:
        hierarchy, controllers, member_of = line.split(":", 2)
        if hierarchy == "0" and not controllers:
            paths[2] = PurePosixPath(member_of)
        elif "cpu" in controllers.split(","):
            paths[1] = PurePosixPath(member_of)
    for line in mounts:
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        mount_root, mount_point = PurePosixPath(fields[3]), fields[4]
        filesystem, options = fields[separator + 1], fields[separator + 3].split(",")
        version = 2 if filesystem == "cgroup2" else 1 if filesystem == "cgroup" else 0
        if version not in paths or (version == 1 and "cpu" not in options):
            continue
        top = root / mount_point.lstrip("/")
        path = paths[version]
        folder = top / path.relative_to(mount_root) if path.is_relative_to(mount_root) else top
        while True:
            yield folder, version
            if folder == top:
                break
            folder = folder.parent


def _read_quota(folder: Path, version: int) -> float | None:
    """Return one cgroup's CPU quota in CPUs, ``None`` when it sets none or cannot be read."""
    try:
        if version == 2:  # noqa: PLR2004 - the cgroup version
            quota, period = (folder / "cpu.max").read_text().split()
            if quota == "max":
                return None
            return int(quota) / int(period)
        quota_us = int((folder / "cpu.cfs_quota_us").read_text())
        if quota_us < 0:
            return None
        return quota_us / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None

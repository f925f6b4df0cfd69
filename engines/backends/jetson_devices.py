"""The device nodes CUDA opens on a Jetson (JetPack 5 and 6), and checks of a unit's `DeviceAllow=`.

egate's units run with `DevicePolicy=closed`: a node missing from `DeviceAllow=` makes `cuInit` fail
and the gate silently runs on the CPU. The list below says where each node comes from, so it can be
kept true when NVIDIA moves nodes; `egate diag engines --device-check` traces which nodes `cuInit`
really opens on the device (strace) and reports any the unit does not allow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# path -> where the node comes from (driver source or L4T documentation).
JETSON_DEVICE_NODES: dict[str, str] = {
    "/dev/nvmap": "nvmap memory manager (L4T kernel, every release): CUDA allocations",
    # nvgpu, legacy names: nvgpu_devnode() in nvgpu os/linux/ioctl.c names each cdev
    # "nvhost-<node>-gpu", and the channel node "nvhost-gpu" (JetPack 4, 5 and 6).
    "/dev/nvhost-ctrl-gpu": "nvgpu 'ctrl' node, legacy name (GPU characteristics, object creation)",
    "/dev/nvhost-gpu": "nvgpu 'channel' node, legacy name",
    "/dev/nvhost-as-gpu": "nvgpu 'as' (address space) node, legacy name",
    "/dev/nvhost-tsg-gpu": "nvgpu 'tsg' (time-slice group) node, legacy name",
    "/dev/nvhost-power-gpu": "nvgpu 'power' node, legacy name (GPU power-on before use)",
    "/dev/nvhost-sched-gpu": "nvgpu 'sched' node, legacy name",
    "/dev/nvhost-nvsched-gpu": "nvgpu 'nvsched' node, legacy name (JetPack 6 nvgpu)",
    # nvgpu, V2 hierarchy: nvgpu_devnode_v2() creates "nvgpu/igpu0/<node>" beside the legacy names;
    # recent JetPack 6 user-space libraries open these.
    "/dev/nvgpu/igpu0/ctrl": "nvgpu V2 'ctrl' node",
    "/dev/nvgpu/igpu0/channel": "nvgpu V2 'channel' node",
    "/dev/nvgpu/igpu0/as": "nvgpu V2 'as' node",
    "/dev/nvgpu/igpu0/tsg": "nvgpu V2 'tsg' node",
    "/dev/nvgpu/igpu0/power": "nvgpu V2 'power' node",
    "/dev/nvgpu/igpu0/sched": "nvgpu V2 'sched' node",
    "/dev/nvgpu/igpu0/nvsched": "nvgpu V2 'nvsched' node",
    # Synchronisation: host1x syncpoints through nvhost on JetPack 5 (L4T r35), through the upstream
    # host1x driver's fence node on JetPack 6 (L4T r36).
    "/dev/nvhost-ctrl": "nvhost syncpoint control (JetPack 5, L4T r35)",
    "/dev/host1x-fence": "host1x fence node (JetPack 6, L4T r36 upstream host1x)",
    "/dev/nvsciipc": "NvSciIpc endpoint database (JetPack 5 and 6, opened by the CUDA user-mode driver on Orin)",
}

_DEVICE_ALLOW = re.compile(r"^\s*DeviceAllow\s*=\s*(\S+)(?:\s+([rwm]+))?\s*$")
# strace -f -e trace=openat,open lines: `123 openat(AT_FDCWD, "/dev/nvmap", O_RDWR|O_CLOEXEC) = 5`
_OPEN_CALL = re.compile(r'open(?:at)?\((?:AT_FDCWD|-?\d+),\s*"(/dev/[^"]+)"|open\("(/dev/[^"]+)"')


# Nodes every process may open and `DevicePolicy=closed` always allows (systemd.resource-control(5)).
_EVERYDAY_NODES = frozenset(
    {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/shm"}
)


def unit_device_allow(unit_text: str) -> dict[str, str]:
    """`DeviceAllow=` entries of a unit file: device path or `char-<group>` -> access (r, rw, rwm)."""
    allowed: dict[str, str] = {}
    for line in unit_text.splitlines():
        match = _DEVICE_ALLOW.match(line)
        if match:
            allowed[match.group(1)] = match.group(2) or "rwm"
    return allowed


def missing_from_unit(unit_text: str, nodes: Iterable[str] = JETSON_DEVICE_NODES) -> list[str]:
    """The nodes of `nodes` that the unit does not allow read-write by path."""
    allowed = unit_device_allow(unit_text)
    return [n for n in nodes if "r" not in allowed.get(n, "") or "w" not in allowed.get(n, "")]


def opened_device_nodes(strace_output: str) -> list[str]:
    """Device nodes (`/dev/...`) that a traced process opened, in first-open order, without repeats."""
    seen: dict[str, None] = {}
    for line in strace_output.splitlines():
        for match in _OPEN_CALL.finditer(line):
            path = match.group(1) or match.group(2)
            if path and path not in _EVERYDAY_NODES and not path.startswith("/dev/shm/"):
                seen.setdefault(path, None)
    return list(seen)

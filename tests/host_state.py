"""What of the host the client tests could touch and must leave as it was: its /sys (the PCI
devices and drivers, a few attributes of each device, the modules), /proc/modules,
`ip -o link`, /lib/modules and /etc/driverctl.d (driverctl saves overrides there without
--nosave). tests/mount/test_clients*.py snapshot it before their first test and compare
after their last."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PCI = Path("/sys/bus/pci")
ATTRS = ("vendor", "device", "class", "driver_override", "enable")


def _listing(path: Path) -> list[str] | None:
    """Every name below path (relative, sorted), None when path does not exist."""
    if not path.exists():
        return None
    out = []
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        out += [os.path.join(rel, n) for n in dirs + files]
    return sorted(out)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError as e:
        return f"<{e.errno}>"


def snapshot() -> dict:
    devices = sorted(os.listdir(PCI / "devices")) if (PCI / "devices").exists() else []
    state = {
        "devices": devices,
        "drivers": sorted(os.listdir(PCI / "drivers")) if (PCI / "drivers").exists() else [],
        "module": sorted(os.listdir("/sys/module")) if os.path.isdir("/sys/module") else None,
        "proc_modules": _read(Path("/proc/modules")) if os.path.exists("/proc/modules") else None,
        "ip_link": subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout,
        "lib_modules": _listing(Path("/lib/modules")),
        "driverctl_d": {p: _read(Path("/etc/driverctl.d") / p) for p in _listing(Path("/etc/driverctl.d")) or []}
        if os.path.exists("/etc/driverctl.d") else None,
    }
    for d in devices:
        base = PCI / "devices" / d
        state[d] = {a: _read(base / a) for a in ATTRS}
        state[d]["driver"] = os.readlink(base / "driver") if (base / "driver").is_symlink() else None
    return state


@pytest.fixture(scope="module", autouse=True)
def host_unchanged():
    """The host as the module found it, checked again when the module is done."""
    before = snapshot()
    yield before
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the host changed: {changed}"

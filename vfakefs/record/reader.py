"""Reading a sysfs tree (the host's /sys, or a mount's MNT/sys) into plain facts, read only.

Every file is opened for reading and nothing else: `vfakefs record` must never change the
machine it records. A file that is missing or cannot be read is not an error: the fact is
absent (None) and the writer says what it left out or approximated.

What is read, and where the kernel shows it:
- /sys/bus/pci/devices/<bdf> -> ../../../devices/pci<domain>:<bus>/.../<bdf>: the parent bridge
  is the directory above (pci_setup_device, device_add under the bridge's device);
- ids, class, revision, irq, numa_node, dma_mask_bits, reset_method (pci-sysfs.c), the
  `resource` table (resource_show: BARs 0-5, ROM 6, IOV BARs 7-12, bridge windows after),
  `config` (pci_read_config: 4096 bytes for root on PCIe, 256 for conventional PCI, 64 for
  anyone else), msi_irqs/ (msi_irqs_show), sriov_* (iov.c), driver and iommu_group links,
  net/<ifname>/{address,mtu} (net-sysfs.c), firmware_node;
- /sys/bus/pci/slots/<name>/address, /sys/bus/pci/drivers/, /sys/class/iommu/<unit>/intel-iommu/
  {cap,ecap,version,address} (drivers/iommu/intel/iommu.c), /sys/kernel/iommu_groups/<n>/type,
  /sys/devices/system/node/node<N>/{cpulist,distance,meminfo}, /sys/devices/system/cpu/present.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

BDF = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])")
ROOT_BUS = re.compile(r"pci([0-9a-f]{4}):([0-9a-f]{2})")


class RecordError(Exception):
    """What the CLI prints on one line: there is nothing to record."""


def read_text(path: Path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def read_int(path: Path, base: int = 0) -> int | None:
    text = read_text(path)
    try:
        return None if text is None else int(text, base)
    except ValueError:
        return None


def read_link(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_config(path: Path) -> tuple[bytes | None, str | None]:
    """The bytes `config` gives this reader (4096, 256 or 64), or None and why not."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        return None, e.strerror or str(e)
    if not data:
        return None, "empty"
    return data, None


def resources(text: str | None) -> list[tuple[int, int, int]]:
    """resource_show lines: (start, end, flags) per resource, in order."""
    out = []
    for line in (text or "").splitlines():
        parts = line.split()
        try:
            out.append(tuple(int(p, 16) for p in parts[:3]))
        except ValueError:
            out.append((0, 0, 0))
    return out


def read_function(root: Path, name: str) -> dict:
    """One function's facts (a dict; absent facts are None)."""
    link = root / "bus/pci/devices" / name
    real = Path(os.path.realpath(link))
    above = real.parent.name
    dev = link
    f: dict = {"bdf": name, "path": str(real)}
    f["parent"] = above if BDF.fullmatch(above) else None
    f["root_bus"] = above if ROOT_BUS.fullmatch(above) else None
    for key in ("vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision"):
        f[key] = read_int(dev / key, 16)
    for key in ("irq", "numa_node", "dma_mask_bits", "sriov_totalvfs", "sriov_offset", "sriov_stride",
                "sriov_numvfs"):
        f[key] = read_int(dev / key, 10)
    f["sriov_vf_device"] = read_int(dev / "sriov_vf_device", 16)
    f["config"], f["config_error"] = read_config(dev / "config")
    f["resource"] = resources(read_text(dev / "resource"))
    rm = read_text(dev / "reset_method")
    f["reset_method"] = None if rm is None else rm.split()
    drv = read_link(dev / "driver")
    f["driver"] = None if drv is None else drv.rsplit("/", 1)[-1]
    grp = read_link(dev / "iommu_group")
    f["iommu_group"] = None if grp is None or not grp.rsplit("/", 1)[-1].isdigit() else int(grp.rsplit("/", 1)[-1])
    f["physfn"] = (read_link(dev / "physfn") or "").rsplit("/", 1)[-1] or None
    fw = read_link(dev / "firmware_node")
    f["firmware_node"] = None
    if fw is not None:
        target = os.path.realpath(dev / "firmware_node")
        marker = os.path.realpath(root / "devices") + "/"
        f["firmware_node"] = target[len(marker):] if target.startswith(marker) else None
    f["msi_irqs"] = {}
    try:
        for irq in sorted(os.listdir(dev / "msi_irqs"), key=lambda s: int(s) if s.isdigit() else -1):
            if irq.isdigit():
                f["msi_irqs"][int(irq)] = read_text(dev / "msi_irqs" / irq)
    except OSError:
        pass
    f["netdevs"] = []
    for netdir in _net_dirs(dev):
        for ifname in sorted(os.listdir(netdir)):
            f["netdevs"].append({"name": ifname, "address": read_text(netdir / ifname / "address"),
                                 "mtu": read_int(netdir / ifname / "mtu", 10)})
    # (VF id, the VF's bdf) of each enabled VF (virtfn<N> links, pci_iov_sysfs_link)
    f["vfs"] = sorted((int(n[6:]), (read_link(dev / n) or "").rsplit("/", 1)[-1])
                      for n in listdir(dev) if n.startswith("virtfn") and n[6:].isdigit())
    return f


def listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _net_dirs(dev: Path) -> list[Path]:
    """net/ of the function, or of a child device the driver registered (virtio-pci puts the
    netdev under virtio<N>/net/, virtnet_probe)."""
    out = [dev / "net"] if (dev / "net").is_dir() else []
    for child in sorted(listdir(dev)):
        if re.fullmatch(r"virtio\d+", child) and (dev / child / "net").is_dir():
            out.append(dev / child / "net")
    return out


def read_iommu_units(root: Path) -> list[dict]:
    out = []
    for unit in sorted(listdir(root / "class/iommu")):
        base = root / "class/iommu" / unit
        intel = base / "intel-iommu"
        u = {"name": unit, "intel": intel.is_dir()}
        if u["intel"]:
            u["cap"], u["ecap"] = read_int(intel / "cap", 16), read_int(intel / "ecap", 16)
            u["address"] = read_int(intel / "address", 16)
            ver = read_text(intel / "version") or ""
            u["version"] = [int(x) for x in ver.split(":")] if re.fullmatch(r"\d+:\d+", ver) else None
        u["devices"] = sorted(listdir(base / "devices"))
        out.append(u)
    return out


def read_groups(root: Path) -> dict[int, dict]:
    out = {}
    for g in listdir(root / "kernel/iommu_groups"):
        if g.isdigit():
            base = root / "kernel/iommu_groups" / g
            out[int(g)] = {"type": read_text(base / "type"), "devices": sorted(listdir(base / "devices"))}
    return out


def read_numa(root: Path) -> list[dict]:
    nodes = []
    base = root / "devices/system/node"
    for name in sorted(listdir(base), key=lambda n: int(n[4:]) if n[4:].isdigit() else -1):
        if not re.fullmatch(r"node\d+", name):
            continue
        mem = None
        for line in (read_text(base / name / "meminfo") or "").splitlines():
            m = re.match(r"Node \d+ MemTotal:\s+(\d+) kB", line)
            if m:
                mem = int(m.group(1)) * 1024
        dist = read_text(base / name / "distance")
        nodes.append({"node": int(name[4:]), "cpus": read_text(base / name / "cpulist"), "memory": mem,
                      "distance": [int(x) for x in dist.split()] if dist else None})
    return nodes


def read_slots(root: Path) -> dict[str, str]:
    """<domain>:<bus>:<dev> -> the slot's name (pci_slot's `address`)."""
    out = {}
    for name in sorted(listdir(root / "bus/pci/slots")):
        addr = read_text(root / "bus/pci/slots" / name / "address")
        if addr:
            out.setdefault(addr, name)
    return out


def cpu_count(root: Path) -> int | None:
    """CPUs present (cpu/present: a cpulist like 0-3)."""
    text = read_text(root / "devices/system/cpu/present")
    if not text:
        return None
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def device_names(root: Path) -> list[str]:
    devdir = root / "bus/pci/devices"
    if not devdir.is_dir():
        raise RecordError(f"{devdir}: no PCI devices here (is {root} a sysfs?)")
    return sorted(n for n in listdir(devdir) if BDF.fullmatch(n))

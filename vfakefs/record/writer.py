"""Facts read from a sysfs tree (reader.py) -> a topology file's text, plus what was approximated.

Each [[device]] carries its whole config space as a `config` dump (the same `hexdump -C`
text model/pci/dump.py reads for qemu-ref's dumps, inline, with `*` for repeated lines), so
lspci decodes the recorded registers, not ones vfakefs builds. The fields beside it (ids,
BARs as `resource` shows them, driver, netdevs, IOMMU group, SR-IOV) are what the model needs
for the files the dump does not answer. Everything here is data of the recorded machine;
anything the model cannot represent is left out or approximated, and said so in `notes`.
"""
from __future__ import annotations

from vfakefs.model.base.drivers import catalogue
from vfakefs.model.pci import config as C
from vfakefs.model.profile import PROFILES

# IORESOURCE_* (include/linux/ioport.h), as `resource` prints them
IO, MEM, PREFETCH, MEM_64 = 0x100, 0x200, 0x2000, 0x100000
PCIE_KINDS = {C.PCIE_ENDPOINT: "endpoint", C.PCIE_LEGACY_ENDPOINT: "legacy_endpoint", C.PCIE_RCIEP: "rc_endpoint",
              C.PCIE_ROOT_PORT: "root_port", C.PCIE_UPSTREAM: "upstream_port",
              C.PCIE_DOWNSTREAM: "downstream_port", C.PCIE_PCI_BRIDGE: "pcie_pci_bridge"}
KNOWN_CAPS = {C.CAP_PM: "Power Management", C.CAP_MSI: "MSI", C.CAP_PCIE: "PCI Express", C.CAP_MSIX: "MSI-X",
              C.CAP_SSVID: "Subsystem ID"}
KNOWN_EXT_CAPS = {C.EXT_AER: "AER", C.EXT_ACS: "ACS", C.EXT_ARI: "ARI", C.EXT_ATS: "ATS", C.EXT_SRIOV: "SR-IOV"}
ECAP_IR, ECAP_EIM = 1 << 3, 1 << 4      # VT-d ECAP: Interrupt Remapping, Extended Interrupt Mode (x2APIC)


def hexdump(data: bytes) -> str:
    """`hexdump -C` of data without its text column, repeated lines folded into `*` (what
    dump.parse reads back)."""
    lines, prev, starred = [], None, False
    for off in range(0, len(data), 16):
        row = data[off:off + 16]
        if row == prev:
            if not starred:
                lines.append("*")
                starred = True
            continue
        prev, starred = row, False
        hexes = " ".join(f"{b:02x}" for b in row[:8]) + "  " + " ".join(f"{b:02x}" for b in row[8:])
        lines.append(f"{off:08x}  {hexes}")    # no text column: nothing for TOML to escape
    lines.append(f"{len(data):08x}")
    return "\n".join(lines)


def kind_of(f: dict, cfg: C.ConfigSpace, notes: list[str]) -> str:
    """The topology kind: the header type and the PCIe capability's port type (pci_setup_device,
    set_pcie_port_type); a host bridge is a type-0 function of class 06 00."""
    htype = cfg.r8(0x0E) & 0x7F
    pos = cfg.find_cap(C.CAP_PCIE)
    ptype = None if pos is None else (cfg.r16(pos + 2) >> 4) & 0xF
    if htype == 1:
        if ptype in (C.PCIE_ROOT_PORT, C.PCIE_UPSTREAM, C.PCIE_DOWNSTREAM, C.PCIE_PCI_BRIDGE):
            return PCIE_KINDS[ptype]
        notes.append(f"{f['bdf']}: a {'conventional PCI' if ptype is None else f'PCIe type {ptype:#x}'} "
                     "bridge, recorded as a pcie_pci_bridge (its config dump kept as read)")
        return "pcie_pci_bridge"
    if htype != 0:
        notes.append(f"{f['bdf']}: header type {htype} (CardBus?) recorded as a pci_endpoint")
    if ptype is None:
        return "host_bridge" if (f.get("class") or 0) >> 8 == 0x0600 else "pci_endpoint"
    if ptype in PCIE_KINDS and ptype not in (C.PCIE_ROOT_PORT, C.PCIE_UPSTREAM, C.PCIE_DOWNSTREAM,
                                             C.PCIE_PCI_BRIDGE):
        return PCIE_KINDS[ptype]
    notes.append(f"{f['bdf']}: PCIe device/port type {ptype:#x} on a type-0 header, recorded as an endpoint")
    return "endpoint"


def unknown_caps(f: dict, cfg: C.ConfigSpace, notes: list[str]) -> None:
    """Capabilities vfakefs gives no behaviour: their bytes are served as recorded."""
    other = [f"{cid:#04x}@{pos:#x}" for cid, pos in cfg.caps() if cid not in KNOWN_CAPS]
    other += [f"ext {cid:#06x}@{pos:#x}" for cid, pos in cfg.ext_caps() if cid not in KNOWN_EXT_CAPS]
    if other:
        notes.append(f"{f['bdf']}: capabilities vfakefs does not model, served as recorded bytes: "
                     + ", ".join(other))


def ats_note(f: dict, cfg: C.ConfigSpace, notes: list[str]) -> None:
    ats = cfg.find_ext_cap(C.EXT_ATS)
    if ats is not None and cfg.r16(ats + 6) & 0x8000:
        # the kernel sets ATS Enable when it attaches the device (pci_enable_ats), and only
        # under a root port an ACPI DMAR ATSR names, which sysfs does not show
        notes.append(f"{f['bdf']}: ATS was enabled; no DMAR ATSR was readable (firmware/acpi/tables/DMAR), so "
                     "ATS stays off at mount (add [acpi.dmar] atsr to turn it on)")


def bar(index: int, start: int, end: int, flags: int, copies: int = 1) -> dict | None:
    """A `resource` line as a BAR table; None for an empty or unusable one."""
    if not flags or end <= start:
        return None
    size = (end - start + 1) // copies
    kind = "io" if flags & IO else "mem64" if flags & MEM_64 else "mem32"
    if size & (size - 1):
        return None
    out = {"index": index, "type": kind, "size": size}
    if flags & PREFETCH and kind != "io":
        out["prefetch"] = True
    if start:
        out["address"] = start
    return out


def cmdline_for(host_cmdline: str | None, iommu_on: bool) -> str:
    """The recorded command line, with the VT-d switch the recorded groups show."""
    words = [w for w in (host_cmdline or "").split() if not w.startswith("intel_iommu=")]
    return " ".join(words + ["intel_iommu=" + ("on" if iommu_on else "off")])


def kernel_profile(release: str | None, notes: list[str]) -> str:
    """The nearest ABI profile (profile.py) at or below the recorded kernel's release."""
    if not release:
        return "6.12"
    try:
        ver = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        ver = (99, 0)
    fits = [p for p in PROFILES if tuple(int(x) for x in p.split(".")) <= ver]
    best = max(fits, key=lambda p: tuple(int(x) for x in p.split("."))) if fits else min(PROFILES)
    if best != ".".join(release.split("-")[0].split(".")[:2]):
        notes.append(f"kernel {release}: shown with vfakefs's {best} ABI profile")
    return best


def known_driver(name: str) -> bool:
    return name in _CATALOGUE


_CATALOGUE = frozenset(catalogue())

"""Builds a function's config space from the topology's fields.

Capabilities go in the order real devices commonly use: power management, MSI,
PCIe, MSI-X, subsystem IDs for bridges; extended ones (AER, ACS, ARI, SR-IOV)
from 0x100. A topology that wants a device's exact bytes gives a dump instead.
"""
from __future__ import annotations

from vfakefs.model.pci import config as C
from vfakefs.model.pci.pci import (IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH,
                               IORESOURCE_SIZEALIGN, Resource)

SPEED_CODES = {"2.5": 1, "5": 2, "5.0": 2, "8": 3, "8.0": 3, "16": 4, "16.0": 4, "32": 5, "32.0": 5,
               "64": 6, "64.0": 6}


def bar_flags(kind: str, prefetch: bool) -> int:
    """The `resource` flags word: IORESOURCE_* plus the BAR's low type bits."""
    if kind == "io":
        return IORESOURCE_IO | IORESOURCE_SIZEALIGN | 0x1
    flags = IORESOURCE_MEM | IORESOURCE_SIZEALIGN
    if kind == "mem64":
        flags |= IORESOURCE_MEM_64 | 0x4
    if prefetch:
        flags |= IORESOURCE_PREFETCH | 0x8
    return flags


def bar_register(res: Resource) -> int:
    """The BAR's 32-bit low register value (the upper half goes in the next BAR)."""
    if res.is_io:
        return (res.start & 0xFFFFFFFC) | 1
    return (res.start & 0xFFFFFFF0) | (res.flags & 0xF)


def write_bars(cfg: C.ConfigSpace, base: int, bars: list[Resource], count: int) -> None:
    i = 0
    while i < count:
        res = bars[i]
        if res.size:
            cfg.w32(base + 4 * i, bar_register(res))
            if res.flags & IORESOURCE_MEM_64 and i + 1 < count:
                cfg.w32(base + 4 * (i + 1), res.start >> 32)
                i += 1
        i += 1


def build_config(*, kind: str, pcie_type: int | None, header_type: int, vendor: int, device: int,
                 class_code: int, revision: int, subsystem_vendor: int, subsystem_device: int,
                 multifunction: bool, bars: list[Resource], rom: Resource, irq: int, bound: bool,
                 msi: int, msix: int, acs: int | None, link: dict, sriov: dict | None,
                 bus_numbers: tuple[int, int, int], windows: list[Resource], ari: bool,
                 aer: bool, ats: bool = False) -> C.ConfigSpace:
    cfg = C.ConfigSpace(4096 if pcie_type is not None else 256)
    cfg.w16(0x00, vendor)
    cfg.w16(0x02, device)
    io_or_mem = (0x1 if any(b.size and b.is_io for b in bars) else 0) | 0x2
    cfg.w16(0x04, io_or_mem | (0x4 if bound or header_type == 1 else 0) | 0x100)
    cfg.w16(0x06, 0x0000)
    cfg.w8(0x08, revision)
    cfg.w8(0x09, class_code & 0xFF)
    cfg.w16(0x0A, class_code >> 8)
    cfg.w8(0x0E, header_type | (0x80 if multifunction else 0))
    if header_type == 0:
        write_bars(cfg, 0x10, bars, 6)
        cfg.w16(0x2C, subsystem_vendor)
        cfg.w16(0x2E, subsystem_device)
        if rom.size:
            cfg.w32(0x30, rom.start & 0xFFFFF800)
    else:
        write_bars(cfg, 0x10, bars, 2)
        primary, secondary, subordinate = bus_numbers
        cfg.w8(0x18, primary)
        cfg.w8(0x19, secondary)
        cfg.w8(0x1A, subordinate)
        _write_windows(cfg, windows)
        cfg.w16(0x3E, 0x0003 if kind != "host_bridge" else 0)  # Parity+ SERR+... of BridgeCtl
    if irq:
        cfg.w8(0x3C, irq & 0xFF)
        cfg.w8(0x3D, 1)

    caps = C.CapWriter(cfg)
    if pcie_type is not None or msi or msix:
        pm = caps.cap(C.CAP_PM, 8)
        cfg.w16(pm + 2, 0x0003)  # PM spec 1.2
        cfg.w16(pm + 4, 0x0008)  # D0, NoSoftRst+
    if msi:
        m = caps.cap(C.CAP_MSI, 0x18)
        mmc = max(0, (msi - 1).bit_length())
        cfg.w16(m + 2, 0x0080 | 0x0100 | mmc << 1)  # 64-bit, per-vector masking
    if pcie_type is not None:
        _write_pcie(cfg, caps.cap(C.CAP_PCIE, 0x3C), pcie_type, link, ari)
    if msix:
        x = caps.cap(C.CAP_MSIX, 12)
        cfg.w16(x + 2, (msix - 1) & 0x7FF)
        cfg.w32(x + 4, 0x00000000)  # table in BAR0 at 0
        cfg.w32(x + 8, 0x00002000)  # PBA in BAR0 at 0x2000
    if header_type == 1 and (subsystem_vendor or subsystem_device):
        s = caps.cap(C.CAP_SSVID, 8)
        cfg.w16(s + 4, subsystem_vendor)
        cfg.w16(s + 6, subsystem_device)

    if cfg.size > 256:
        if aer:
            a = caps.ext_cap(C.EXT_AER, 2, 0x48)
            cfg.w32(a + 0x0C, 0x00462030)  # Uncorrectable error severity: the spec's default
        if acs is not None:
            a = caps.ext_cap(C.EXT_ACS, 1, 8)
            cfg.w16(a + 4, acs)
            cfg.w16(a + 6, acs & C.ACS_REQUIRED)  # the kernel enables what it needs (pci_enable_acs)
        if ari:
            caps.ext_cap(C.EXT_ARI, 1, 8)
        if ats:   # ATS: Invalidate Queue Depth 0 (32), Page Aligned Request; Enable clear until the IOMMU sets it
            cfg.w16(caps.ext_cap(C.EXT_ATS, 1, 8) + 4, 0x0020)
        if sriov:
            _write_sriov(cfg, caps.ext_cap(C.EXT_SRIOV, 1, 0x40), sriov)
    return cfg


def _write_windows(cfg: C.ConfigSpace, windows: list[Resource]) -> None:
    io, mem, pref = (windows + [Resource(0, 0, 0)] * 3)[:3]
    if io.size:
        cfg.w8(0x1C, (io.start >> 8) & 0xF0 | 1)
        cfg.w8(0x1D, (io.end >> 8) & 0xF0 | 1)
    else:
        cfg.w16(0x1C, 0x00F0)
    if mem.size:
        cfg.w16(0x20, (mem.start >> 16) & 0xFFF0)
        cfg.w16(0x22, (mem.end >> 16) & 0xFFF0)
    else:
        cfg.w32(0x20, 0x0000FFF0)
    if pref.size:
        cfg.w16(0x24, (pref.start >> 16) & 0xFFF0 | 1)
        cfg.w16(0x26, (pref.end >> 16) & 0xFFF0 | 1)
        cfg.w32(0x28, pref.start >> 32)
        cfg.w32(0x2C, pref.end >> 32)
    else:
        cfg.w32(0x24, 0x0001FFF1)


def _write_pcie(cfg: C.ConfigSpace, pos: int, ptype: int, link: dict, ari: bool) -> None:
    slot = ptype in (C.PCIE_ROOT_PORT, C.PCIE_DOWNSTREAM)
    cfg.w16(pos + 2, 0x0002 | ptype << 4 | (0x0100 if slot else 0))
    cfg.w32(pos + 4, 0x00008000 | 0x2 | (0x10000000 if ptype == C.PCIE_ENDPOINT else 0))  # 512B MPS, RBE+, FLR
    cfg.w16(pos + 8, 0x2810 if ptype in (C.PCIE_ENDPOINT, C.PCIE_LEGACY_ENDPOINT) else 0x0010)
    max_speed = SPEED_CODES[str(link.get("max_speed", "8.0"))]
    cur_speed = SPEED_CODES[str(link.get("speed", link.get("max_speed", "8.0")))]
    max_width = int(link.get("max_width", 1))
    cur_width = int(link.get("width", max_width))
    port = int(link.get("port", 0))
    cfg.w32(pos + 0x0C, max_speed | max_width << 4 | 0x00400000 | port << 24)  # ASPM optionality
    cfg.w16(pos + 0x12, cur_speed | cur_width << 4 | (0x2000 if ptype in (C.PCIE_ROOT_PORT, C.PCIE_DOWNSTREAM) else 0))
    if slot:
        cfg.w32(pos + 0x14, 0x00040060 | port << 19)  # HotPlug+ Surprise+, physical slot
        cfg.w16(pos + 0x1A, 0x0040)  # presence detect
    cfg.w32(pos + 0x24, 0x00000020 if slot else 0x00000000 | (0x10 if ptype == C.PCIE_ENDPOINT else 0))  # ARI fwd
    if ari and slot:
        cfg.w16(pos + 0x28, 0x0020)  # ARIFwd+
    cfg.w32(pos + 0x2C, ((1 << max_speed) - 1) << 1)  # supported link speeds vector
    cfg.w16(pos + 0x30, max_speed)


def _write_sriov(cfg: C.ConfigSpace, pos: int, sr: dict) -> None:
    cfg.w32(pos + 4, 0x00000000)
    cfg.w16(pos + C.SRIOV_INITIAL_VF, sr["total_vfs"])
    cfg.w16(pos + C.SRIOV_TOTAL_VF, sr["total_vfs"])
    cfg.w16(pos + C.SRIOV_VF_OFFSET, sr["offset"])
    cfg.w16(pos + C.SRIOV_VF_STRIDE, sr["stride"])
    cfg.w16(pos + C.SRIOV_VF_DID, sr["vf_device"])
    cfg.w32(pos + C.SRIOV_SUP_PGSIZE, 0x553)
    cfg.w32(pos + C.SRIOV_SYS_PGSIZE, 0x1)
    write_bars(cfg, pos + C.SRIOV_BAR, sr["vf_bars"], 6)


def build_vf_config(pf) -> bytes:
    """A VF's config space as the SR-IOV spec has it: Vendor and Device ID read
    0xFFFF (sysfs shows the real ids), no BARs of its own (they live in the PF's
    SR-IOV capability), the PF's class, an Express endpoint with MSI-X and ARI."""
    pos = pf.pcie_cap
    link = {}
    if pos is not None:
        cap = pf.config.r32(pos + 0x0C)
        speeds = {v: k for k, v in SPEED_CODES.items() if "." in k or k in ("8", "16", "32", "64")}
        link = {"max_speed": speeds.get(cap & 0xF, "2.5"), "max_width": (cap >> 4) & 0x3F}
    msix_pos = pf.config.find_cap(C.CAP_MSIX)
    msix = 3 if msix_pos is not None else 0
    cfg = build_config(kind="endpoint", pcie_type=C.PCIE_ENDPOINT, header_type=0, vendor=0xFFFF,
                       device=0xFFFF, class_code=pf.class_code, revision=pf.revision,
                       subsystem_vendor=pf.subsystem_vendor, subsystem_device=pf.subsystem_device,
                       multifunction=False, bars=[Resource(0, 0, 0)] * 6, rom=Resource(0, 0, 0), irq=0, bound=False, msi=0,
                       msix=msix, acs=None, link=link, sriov=None, bus_numbers=(0, 0, 0), windows=[],
                       ari=True, aer=False)
    cfg.w16(0x04, 0x0000)   # VFs ignore I/O and memory enables: those live in the PF
    return bytes(cfg.bytes)

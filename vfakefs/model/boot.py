"""The kernel's boot messages for a topology: command line, DMAR, DMAR-IR, PCI enumeration, iommu."""
from __future__ import annotations

from typing import TYPE_CHECKING

from vfakefs.model.dmar import DmarUnit
from vfakefs.model.kmsg import KERN_WARNING

if TYPE_CHECKING:
    from vfakefs.model.machine import Machine


def default_domain(cmdline: str, unit: DmarUnit) -> str:
    args = cmdline.split()
    if "iommu=pt" in args or "iommu.passthrough=1" in args:
        return "identity"
    strict = "iommu.strict=1" in args or unit.cap & 0x80  # CAP.CM: caching mode forces strict
    return "DMA" if strict else "DMA-FQ"


def boot_log(m: Machine, iommu_on: bool, x2apic: bool) -> None:
    log = m.kmsg
    log.boot(f"Linux version {m.profile.release} (vfakefs) #1 SMP PREEMPT_DYNAMIC")
    log.boot(f"Command line: {m.cmdline}")
    args = m.cmdline.split()
    if "intel_iommu=on" in args:
        log.boot("DMAR: IOMMU enabled")
    elif "intel_iommu=off" in args:
        log.boot("DMAR: IOMMU disabled")
    if m.dmar and iommu_on:
        u = m.dmar[0]
        log.boot("DMAR: Host address width %d" % (((u.cap >> 16) & 0x3F) + 1))
        log.boot("DMAR: DRHD base: %#016x flags: 0x0" % u.reg_base)
        log.boot("DMAR: dmar%d: reg_base_addr %x ver %d:%d cap %x ecap %x"
                 % (u.seq_id, u.reg_base, u.version[0], u.version[1], u.cap, u.ecap))
        if m.interrupt_remapping and u.ir_supported:
            log.boot("DMAR-IR: IOAPIC id 0 under DRHD base  %#x IOMMU 0" % u.reg_base)
            mode = "x2apic" if x2apic else "xapic"
            log.boot(f"DMAR-IR: Enabled IRQ remapping in {mode} mode")
    for f in m.functions:
        log.boot("pci %s: [%04x:%04x] type %02x class %#08x" % (f.name, f.vendor, f.device, f.header_type, f.class_code))
    if iommu_on:
        dom = default_domain(m.cmdline, m.dmar[0])
        log.boot("iommu: Default domain type: " + ("Passthrough" if dom == "identity" else "Translated")
                 + (" (set via kernel command line)" if dom == "identity" else " "))
        log.boot("iommu: DMA domain TLB invalidation policy: " + ("lazy mode " if dom == "DMA-FQ" else "strict mode "))
        log.boot("DMAR: dmar0: Using Queued invalidation")
    elif m.dmar:
        log.boot("DMAR: IOMMU disabled", KERN_WARNING)

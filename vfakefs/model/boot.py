"""The kernel's boot messages for a topology: command line, ACPI DMAR table, DMAR,
DMAR-IR, PCI enumeration, iommu core, intel_iommu_init.

The order and wording are those of a real boot (../shared/reference/kernel-6.1/
boot-stock-intel_iommu_on.log for the QEMU machine); the timestamps are the
reference's where it has them (`at=`, in microseconds), else a few hundred
microseconds after the previous line. topology.py adds the `Adding to iommu
group` lines and `DMAR: Intel(R) Virtualization Technology for Directed I/O`
after boot_log(); late_boot_log() holds what a boot prints after that.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.kmsg import KERN_NOTICE, KERN_WARNING

if TYPE_CHECKING:
    from vfakefs.model.machine import Machine

# What differs between the kernels, until profile.py names these facts
# (KernelProfile fields of the same names take precedence when they exist).
# The firmware's ACPI DMAR table: QEMU's (the reference machine) or a PC's (EDK2)
_ACPI_DMAR = {
    "qemu": dict(addr=0x3FFE2632, length=0x88, oem="(v01 BOCHS  BXPC     00000001 BXPC 00000001)",
                 ioapic_id=0, hpet=False, drhd_flags=0x0),
    "pc": dict(addr=0x8C5A2A58, length=0xA8, oem="(v01 INTEL  EDK2     00000002      01000013)",
               ioapic_id=2, hpet=True, drhd_flags=0x1),
}

ECAP_EIM = 1 << 4   # extended interrupt mode: x2APIC ids in IRTEs
CAP_CM = 1 << 7     # caching mode: a virtual IOMMU
ECAP_SMTS = 1 << 43  # scalable mode translation


def fact(m: Machine, name: str):
    """A boot-log difference between kernel versions: a named fact of the profile."""
    return getattr(m.profile, name)


def platform(m: Machine) -> str:
    """QEMU when the host bridge carries QEMU's subsystem id (1af4:1100), else a PC."""
    hb = next((f for f in m.functions if f.name == "0000:00:00.0"), None)
    return "qemu" if hb is not None and hb.subsystem_vendor == 0x1AF4 else "pc"


def default_domain(cmdline: str, unit: DmarUnit) -> str:
    args = cmdline.split()
    if "iommu=pt" in args or "iommu.passthrough=1" in args:
        return "identity"
    strict = "iommu.strict=1" in args or unit.cap & CAP_CM  # CAP.CM: caching mode forces strict
    return "DMA" if strict else "DMA-FQ"


def boot_log(m: Machine, iommu_on: bool, x2apic: bool) -> None:
    log = m.kmsg
    args = m.cmdline.split()
    acpi = _ACPI_DMAR[platform(m)]
    log.boot(fact(m, "banner").format(release=m.profile.release), KERN_NOTICE, at=0)
    log.boot(f"Command line: {m.cmdline}", at=0)
    if m.dmar:   # the firmware's DMAR table, found whatever the command line says
        a, n = acpi["addr"], acpi["length"]
        log.boot("ACPI: DMAR 0x%016X %06X %s" % (a, n, acpi["oem"]), at=45_145)
        log.boot("ACPI: Reserving DMAR table memory at [mem %#x-%#x]" % (a, a + n - 1))
    log.boot(f"Kernel command line: {m.cmdline}", KERN_NOTICE, at=112_493)
    if "intel_iommu=on" in args:
        log.boot("DMAR: IOMMU enabled")
    elif "intel_iommu=off" in args:
        log.boot("DMAR: IOMMU disabled")
    # dmar_table_init(): for interrupt remapping (early) or for intel_iommu_init
    ir = bool(m.dmar) and m.interrupt_remapping and all(u.ir_supported for u in m.dmar)
    if m.dmar and (iommu_on or ir):
        log.boot("DMAR: Host address width %d" % (((m.dmar[0].cap >> 16) & 0x3F) + 1), at=327_583)
        for u in m.dmar:
            log.boot("DMAR: DRHD base: %#016x flags: %#x" % (u.reg_base, acpi["drhd_flags"]))
            log.boot("DMAR: dmar%d: reg_base_addr %x ver %d:%d cap %x ecap %x"
                     % (u.seq_id, u.reg_base, u.version[0], u.version[1], u.cap, u.ecap))
    if ir:
        u = m.dmar[-1]
        log.boot("DMAR-IR: IOAPIC id %d under DRHD base  %#x IOMMU %d" % (acpi["ioapic_id"], u.reg_base, u.seq_id))
        if acpi["hpet"]:
            log.boot("DMAR-IR: HPET id 0 under DRHD base %#x" % u.reg_base)
        eim = x2apic and all(d.ecap & ECAP_EIM for d in m.dmar)
        if eim:
            log.boot("DMAR-IR: Queued invalidation will be enabled to support x2apic and Intr-remapping.")
        log.boot("DMAR-IR: Enabled IRQ remapping in %s mode" % ("x2apic" if eim else "xapic"), at=339_113)
    for f in m.functions:
        log.boot(f"pci {f.name}: {f.setup_line(m.profile.pci_setup_type_str)}",
                 at=1_264_119 if f is m.functions[0] else None)
    _iommu_subsys_init(m, args)
    if iommu_on:
        _intel_iommu_init(m)


def _iommu_subsys_init(m: Machine, args: list[str]) -> None:
    """drivers/iommu/iommu.c iommu_subsys_init(): printed on every boot."""
    sp = " " if fact(m, "iommu_print_trailing_space") else ""
    dma_api = any(a in ("iommu=pt", "iommu=nopt") or a.startswith("iommu.passthrough=") for a in args)
    passthrough = "iommu=pt" in args or "iommu.passthrough=1" in args
    note = " (set via kernel command line)" if dma_api else sp
    m.kmsg.boot("iommu: Default domain type: " + ("Passthrough" if passthrough else "Translated") + note,
                at=1_507_016)
    if not passthrough:
        strict_set = any(a.startswith("iommu.strict=") for a in args)
        # caching mode makes intel_iommu_init() switch to strict later: this line comes first
        strict = "iommu.strict=1" in args
        m.kmsg.boot("iommu: DMA domain TLB invalidation policy: " + ("strict" if strict else "lazy") + " mode"
                    + (" (set via kernel command line)" if strict_set else sp))


def _intel_iommu_init(m: Machine) -> None:
    """drivers/iommu/intel/iommu.c intel_iommu_init() up to the iommu groups."""
    log = m.kmsg
    log.boot("DMAR: No RMRR found", at=1_730_303)
    log.boot("DMAR: No ATSR found")
    log.boot("DMAR: No SATC found")
    for u in m.dmar:
        log.boot(f"DMAR: dmar{u.seq_id}: Using Queued invalidation")
    cm = [u for u in m.dmar if u.cap & CAP_CM]
    if fact(m, "vtd_vcmd_pasid_warning") and any(not u.ecap & ECAP_SMTS for u in cm):
        log.boot("DMAR: VT-d Scalable Mode not enabled, no PASID allocation", KERN_WARNING)
    if cm:
        log.boot("DMAR: IOMMU batching disallowed due to virtualization")


def late_boot_log(m: Machine) -> None:
    """What the boot prints after the iommu groups and the VT-d banner (modules loaded
    later): topology.py calls it last."""
    if fact(m, "amd_iommu_v2_banner"):
        m.kmsg.boot("AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.",
                    KERN_WARNING, at=3_060_816)

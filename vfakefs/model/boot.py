"""The kernel's boot messages for a topology: command line, e820 map, ACPI DMAR table,
DMAR, DMAR-IR, ECAM and the host bridge, PCI enumeration and resource assignment
(pci/resource_log.py), iommu core, intel_iommu_init, the PCIe port services and the
drivers loaded at boot.

The order and wording are those of a real boot (the QEMU machine's
boot-stock-intel_iommu_on.log); what each line says comes from the topology:
the firmware's DMAR table (`[acpi.dmar]`: its address, header ids, DRHD flags,
the IOAPIC/HPET scopes, ATSR entries), `[firmware]` (model/firmware.py: e820, ECAM,
host bridge windows, what it left unassigned), the units, the devices' `rmrr` ranges
(one RMRR structure per distinct range), the drivers' banners and the command line. The table's length
is computed from the structures it holds (dmar_table_length).

Boot clock (the `[    t]` of each line):
  * the banner is at 0;
  * a stage the topology's `[recorded.boot_clock]` names (usec, e.g. the QEMU
    capture's) starts at that time: acpi_dmar, cmdline, dmar_table, ir_enabled,
    mmconfig, pci_host (the host bridge), pci (its first function), iommu_subsys,
    pci_assign (resource assignment), intel_iommu_init, pcieport, late, drivers;
  * every other line is 317 us after the one before (KernelLog.boot's step: the
    per-line cost), and so is an anchor that would not move the clock forward.
A topology without recorded anchors is therefore a boot whose lines follow each
other at that fixed cost; the log never goes back in time.

bringup.py adds the `Adding to iommu group` lines and `DMAR: Intel(R)
Virtualization Technology for Directed I/O` after boot_log(); late_boot_log()
(the port services, late modules) and driver_boot_log() (the drivers bound at boot,
once their vectors exist) hold what a boot prints after that.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from vfakefs.model.base import modules, probe_log
from vfakefs.model.firmware import e820_lines, ecam_lines, host_bridge_lines
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.kmsg import KERN_NOTICE, KERN_WARNING
from vfakefs.model.pci import pciehp, resource_log

if TYPE_CHECKING:
    from vfakefs.model.machine import Machine

# The firmware's ACPI DMAR table when the topology declares none (`[acpi.dmar]` overrides
# each field): a PC's EDK2-derived firmware, remapping hardware for every PCI device.
DEFAULT_DMAR = dict(address=0x8C5A2A58, revision=1, oem_id="INTEL", oem_table_id="EDK2", oem_revision=2,
                    creator_id="", creator_revision=0x01000013, flags=0x1, ioapic_id=2, hpet=True, atsr=())
DMAR_KEYS = frozenset(DEFAULT_DMAR)
BOOT_STAGES = ("acpi_dmar", "cmdline", "dmar_table", "ir_enabled", "mmconfig", "pci_host", "pci", "iommu_subsys", "pci_assign",
               "intel_iommu_init", "pcieport", "late", "drivers")
DRHD_INCLUDE_PCI_ALL = 0x1
ATSR_ALL_PORTS = 0x1

ECAP_EIM = 1 << 4   # extended interrupt mode: x2APIC ids in IRTEs
CAP_CM = 1 << 7     # caching mode: a virtual IOMMU
ECAP_SMTS = 1 << 43  # scalable mode translation


def fact(m: Machine, name: str):
    """A boot-log difference between kernel versions: a named fact of the profile."""
    return getattr(m.profile, name)


def dmar_table(m: Machine) -> dict:
    """The firmware's DMAR table: the topology's `[acpi.dmar]` over DEFAULT_DMAR."""
    return {**DEFAULT_DMAR, **getattr(m, "acpi", {}).get("dmar", {})}


def rmrr_ranges(m: Machine) -> list[tuple[int, int]]:
    """One RMRR structure per distinct (base, end), in the order the devices declare them."""
    out: list[tuple[int, int]] = []
    for f in m.functions:
        for r in f.rmrrs:
            if tuple(r) not in out:
                out.append(tuple(r))
    return out


def _scope_len(f) -> int:
    """An ACPI device scope: 6 bytes and a (device, function) pair per hop from the root bus."""
    hops, up = 1, f.parent
    while up is not None:
        hops, up = hops + 1, up.parent
    return 6 + 2 * hops


def dmar_table_length(m: Machine, acpi: dict) -> int:
    """The table's size from what it holds (ACPI DMAR, VT-d spec 8.1-8.5): the 48-byte header;
    per DRHD 16 bytes, an 8-byte IOAPIC scope, an HPET scope, and without INCLUDE_PCI_ALL one
    scope per root-bus function; per RMRR 24 bytes and a scope per device; per ATSR 8 bytes
    and, without ALL_PORTS, one scope per root port."""
    n = 48
    for _ in m.dmar:
        n += 16 + 8 + (8 if acpi["hpet"] else 0)
        if not acpi["flags"] & DRHD_INCLUDE_PCI_ALL:
            n += sum(_scope_len(f) for f in m.functions if f.parent is None and not f.is_virtfn)
    for r in rmrr_ranges(m):
        n += 24 + sum(_scope_len(f) for f in m.functions if r in map(tuple, f.rmrrs))
    for a in acpi["atsr"]:
        n += 8
        if not a.get("flags", 0) & ATSR_ALL_PORTS:   # its scope: the ports it names, else every root port
            n += sum(_scope_len(f) for f in m.functions
                     if f.kind == "root_port" and ("ports" not in a or f.name in a["ports"]))
    return n


def _acpi_header(acpi: dict) -> str:
    """acpi_tb_print_table_header()'s parenthesis: revision, OEM ids, creator."""
    return "(v%02d %-6.6s %-8.8s %08X %-4.4s %08X)" % (
        acpi["revision"], acpi["oem_id"], acpi["oem_table_id"], acpi["oem_revision"], acpi["creator_id"],
        acpi["creator_revision"])


def anchor(m: Machine, stage: str) -> int | None:
    """When a boot stage starts, if the topology recorded it (usec); else None: the next step."""
    return getattr(m, "recorded", {}).get("boot_clock", {}).get(stage)


def default_domain(cmdline: str, unit: DmarUnit) -> str:
    args = cmdline.split()
    if "iommu=pt" in args or "iommu.passthrough=1" in args:
        return "identity"
    strict = "iommu.strict=1" in args or unit.cap & CAP_CM  # CAP.CM: caching mode forces strict
    return "DMA" if strict else "DMA-FQ"


def intel_iommu_switches(cmdline: str) -> list[str]:
    """The `on` and `off` options of every intel_iommu= word, in order (intel_iommu_setup
    walks each word's comma-separated options, e.g. intel_iommu=on,sm_on); the last wins."""
    return [opt for word in cmdline.split() if word.startswith("intel_iommu=")
            for opt in word.removeprefix("intel_iommu=").split(",") if opt in ("on", "off")]


def iommu_enabled(cmdline: str) -> bool:
    """dmar_disabled after the command line: the last on/off, on when none is given."""
    return (intel_iommu_switches(cmdline) or ["on"])[-1] == "on"


def boot_log(m: Machine, iommu_on: bool, x2apic: bool) -> None:
    log = m.kmsg
    args = m.cmdline.split()
    acpi = dmar_table(m)
    log.boot(fact(m, "banner").format(release=m.profile.release), KERN_NOTICE, at=0)
    log.boot(f"Command line: {m.cmdline}", at=0)
    for line in e820_lines(m.firmware):
        log.boot(line)
    if m.dmar:   # the firmware's DMAR table, found whatever the command line says
        a, n = acpi["address"], dmar_table_length(m, acpi)
        log.boot("ACPI: DMAR 0x%016X %06X %s" % (a, n, _acpi_header(acpi)), at=anchor(m, "acpi_dmar"))
        log.boot("ACPI: Reserving DMAR table memory at [mem %#x-%#x]" % (a, a + n - 1))
    log.boot(f"Kernel command line: {m.cmdline}", KERN_NOTICE, at=anchor(m, "cmdline"))
    for word in intel_iommu_switches(m.cmdline):      # intel_iommu_setup: a line per on/off
        log.boot("DMAR: IOMMU enabled" if word == "on" else "DMAR: IOMMU disabled")
    # dmar_table_init(): for interrupt remapping (early) or for intel_iommu_init
    ir = bool(m.dmar) and m.interrupt_remapping and all(u.ir_supported for u in m.dmar)
    if m.dmar and (iommu_on or ir):
        log.boot("DMAR: Host address width %d" % (((m.dmar[0].cap >> 16) & 0x3F) + 1),
                 at=anchor(m, "dmar_table"))
        # parse_dmar_table(): each structure printed as it is parsed (dmar_table_print_dmar_entry),
        # a DRHD's unit announcing itself (alloc_iommu) right after it
        for u in m.dmar:
            log.boot("DMAR: DRHD base: %#016x flags: %#x" % (u.reg_base, acpi["flags"]))
            log.boot("DMAR: dmar%d: reg_base_addr %x ver %d:%d cap %x ecap %x"
                     % (u.seq_id, u.reg_base, u.version[0], u.version[1], u.cap, u.ecap))
        for base, end in rmrr_ranges(m):
            log.boot("DMAR: RMRR base: %#016x end: %#016x" % (base, end))
        for atsr in acpi["atsr"]:
            log.boot("DMAR: ATSR flags: %#x" % atsr.get("flags", 0))
    if ir:
        u = m.dmar[-1]
        log.boot("DMAR-IR: IOAPIC id %d under DRHD base  %#x IOMMU %d" % (acpi["ioapic_id"], u.reg_base, u.seq_id))
        if acpi["hpet"]:
            log.boot("DMAR-IR: HPET id 0 under DRHD base %#x" % u.reg_base)
        eim = x2apic and all(d.ecap & ECAP_EIM for d in m.dmar)
        if eim:
            log.boot("DMAR-IR: Queued invalidation will be enabled to support x2apic and Intr-remapping.")
        log.boot("DMAR-IR: Enabled IRQ remapping in %s mode" % ("x2apic" if eim else "xapic"),
                 at=anchor(m, "ir_enabled"))
    log.boot("acpiphp: ACPI Hot Plug PCI Controller Driver version: 0.5")   # acpiphp_init (built in)
    for i, line in enumerate(ecam_lines(m.firmware, m.profile)):   # pci_arch_init (arch/x86/pci)
        log.boot(line, at=anchor(m, "mmconfig") if i == 0 else None)
    for line in host_bridge_lines(m.firmware, m.cmdline):
        log.boot(line)
    for line, stage in resource_log.enumeration(m):      # pci_scan_root_bus (probe.c)
        log.boot(line, at=anchor(m, stage) if stage else None)
    _iommu_subsys_init(m, args)
    log.boot("PCI: Using ACPI for IRQ routing")            # pci_acpi_init (subsys_initcall)
    for i, line in enumerate(resource_log.boot_assignment(m)):   # pcibios_assign_resources (setup-bus.c)
        log.boot(line, at=anchor(m, "pci_assign") if i == 0 else None)
    if iommu_on:
        _intel_iommu_init(m, acpi)


def _iommu_subsys_init(m: Machine, args: list[str]) -> None:
    """drivers/iommu/iommu.c iommu_subsys_init(): printed on every boot."""
    sp = " " if fact(m, "iommu_print_trailing_space") else ""
    dma_api = any(a in ("iommu=pt", "iommu=nopt") or a.startswith("iommu.passthrough=") for a in args)
    passthrough = "iommu=pt" in args or "iommu.passthrough=1" in args
    note = " (set via kernel command line)" if dma_api else sp
    m.kmsg.boot("iommu: Default domain type: " + ("Passthrough" if passthrough else "Translated") + note,
                at=anchor(m, "iommu_subsys"))
    if not passthrough:
        strict_set = any(a.startswith("iommu.strict=") for a in args)
        # caching mode makes intel_iommu_init() switch to strict later: this line comes first
        strict = "iommu.strict=1" in args
        m.kmsg.boot("iommu: DMA domain TLB invalidation policy: " + ("strict" if strict else "lazy") + " mode"
                    + (" (set via kernel command line)" if strict_set else sp))


def _intel_iommu_init(m: Machine, acpi: dict) -> None:
    """drivers/iommu/intel/iommu.c intel_iommu_init() up to the iommu groups: the structure
    lists the DMAR table left empty are named."""
    log = m.kmsg
    first = anchor(m, "intel_iommu_init")
    notes = [] if rmrr_ranges(m) else ["DMAR: No RMRR found"]
    notes += [] if acpi["atsr"] else ["DMAR: No ATSR found"]
    notes.append("DMAR: No SATC found")      # SATC structures are not modelled
    for i, note in enumerate(notes):
        log.boot(note, at=first if i == 0 else None)
    for u in m.dmar:
        log.boot(f"DMAR: dmar{u.seq_id}: Using Queued invalidation")
    cm = [u for u in m.dmar if u.cap & CAP_CM]
    if fact(m, "vtd_vcmd_pasid_warning") and any(not u.ecap & ECAP_SMTS for u in cm):
        log.boot("DMAR: VT-d Scalable Mode not enabled, no PASID allocation", KERN_WARNING)
    if cm:
        log.boot("DMAR: IOMMU batching disallowed due to virtualization")


def late_boot_log(m: Machine) -> None:
    """What the boot prints after the iommu groups and the VT-d banner: the PCIe port
    services (drivers/pci/pcie: pcie_pme_probe, aer_probe, each with the port's interrupt),
    then the modules loaded later."""
    first = True
    for f in m.functions:
        if f.driver is None or not f.driver.port_services or f.pcie_type != 4:   # services of root ports
            continue
        irq = f.msi_irqs[0][0] if f.msi_irqs else f.irq
        lines = [f"PME: Signaling with IRQ {irq}"] + ([f"AER: enabled with IRQ {irq}"] if f.has_aer else [])
        lines += [pciehp.init_line(f) for s in m.slots if s.hotplug and s.port is f]   # the hotplug service
        for line in lines:
            m.kmsg.boot(f"pcieport {f.name}: {line}", at=anchor(m, "pcieport") if first else None)
            first = False
    if fact(m, "amd_iommu_v2_banner"):
        m.kmsg.boot("AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.",
                    KERN_WARNING, at=anchor(m, "late"))


def driver_boot_log(m: Machine) -> None:
    """The drivers bound at boot, as their modules load: each module's init lines, then its
    devices' probe lines, then what their asynchronous probes print once done (nvme's
    queues after every controller's `pci function`). Modules load in the order their
    first device probes (the topology's recorded probe order, else bus order)."""
    order = getattr(m, "recorded", {}).get("irq", {}).get("probe_order", [])
    rank = {bdf: i for i, bdf in enumerate(order)}
    bound = sorted((f for f in m.functions if f.driver is not None),
                   key=lambda f: (rank.get(f.name, len(rank)), m.functions.index(f)))
    first = True
    for drv in dict.fromkeys(f.driver for f in bound):
        devs = [f for f in bound if f.driver is drv]
        mod = modules.of_driver(drv.name)                # its module's init banner (module_table.py)
        lines = list(mod.init_log if mod is not None else ()) + [line for f in devs for line in probe_log.probe_lines(m, drv, f, late=False)]
        lines += [line for f in devs for line in probe_log.late_lines(m, drv, f)]
        for line in lines:
            m.kmsg.boot(line, at=anchor(m, "drivers") if first else None)
            first = False

"""PCI functions: identity, resources, config space, and place in the tree."""
from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING

from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci import config as C

if TYPE_CHECKING:
    from vfakefs.model.base.drivers import Driver
    from vfakefs.model.iommu.groups import IommuGroup
    from vfakefs.model.pci.iov import Sriov
    from vfakefs.model.net import NetDev

# Function kinds a topology names, with their PCIe port type and header type.
KINDS = {
    "host_bridge": (None, 0),
    "endpoint": (C.PCIE_ENDPOINT, 0),
    "legacy_endpoint": (C.PCIE_LEGACY_ENDPOINT, 0),
    "rc_endpoint": (C.PCIE_RCIEP, 0),
    "pci_endpoint": (None, 0),  # conventional PCI: no PCIe capability, 256-byte config
    "root_port": (C.PCIE_ROOT_PORT, 1),
    "upstream_port": (C.PCIE_UPSTREAM, 1),
    "downstream_port": (C.PCIE_DOWNSTREAM, 1),
    "pcie_pci_bridge": (C.PCIE_PCI_BRIDGE, 1),
}

# IORESOURCE_* flags as the kernel prints them in `resource` (include/linux/ioport.h)
IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_PREFETCH = 0x100, 0x200, 0x2000
IORESOURCE_READONLY, IORESOURCE_SIZEALIGN, IORESOURCE_MEM_64 = 0x4000, 0x40000, 0x100000
IORESOURCE_WINDOW = 0x200000

PCIE_TYPE_STR = ("PCIe Endpoint", "PCIe Legacy Endpoint", "PCIe unknown", "PCIe unknown", "PCIe Root Port",
                 "PCIe Switch Upstream Port", "PCIe Switch Downstream Port", "PCIe to PCI/PCI-X bridge",
                 "PCI/PCI-X to PCIe bridge", "PCIe Root Complex Integrated Endpoint",
                 "PCIe Root Complex Event Collector")

LINK_SPEEDS = {1: "2.5 GT/s PCIe", 2: "5.0 GT/s PCIe", 3: "8.0 GT/s PCIe", 4: "16.0 GT/s PCIe",
               5: "32.0 GT/s PCIe", 6: "64.0 GT/s PCIe"}


@dataclass(frozen=True, slots=True)
class Resource:
    """One BAR (or ROM / bridge window): what `resource` prints and lspci decodes."""
    start: int
    size: int
    flags: int

    @property
    def end(self) -> int:
        return self.start + self.size - 1 if self.size else 0

    @property
    def is_io(self) -> bool:
        return bool(self.flags & IORESOURCE_IO)

    def line(self) -> str:
        if not self.size:
            return "0x%016x 0x%016x 0x%016x\n" % (0, 0, 0)
        return "0x%016x 0x%016x 0x%016x\n" % (self.start, self.end, self.flags)


EMPTY = Resource(0, 0, 0)


def read_header(cfg: C.ConfigSpace) -> tuple[dict, dict, int, int, bool]:
    """What pci_setup_device()/pci_init_capabilities() cache from config space: the
    capability offsets (the first of each id), the PCIe Capabilities register, PME
    support and ARI forwarding (DevCtl2)."""
    caps, ext_caps = {}, {}
    for cid, pos in cfg.caps():
        caps.setdefault(cid, pos)
    for cid, pos in cfg.ext_caps():
        ext_caps.setdefault(cid, pos)
    pos = caps.get(C.CAP_PCIE)
    pm = caps.get(C.CAP_PM)
    return (caps, ext_caps, cfg.r16(pos + 2) if pos is not None else 0,
            (cfg.r16(pm + 2) >> 11) & 0x1F if pm is not None else 0,
            pos is not None and bool(cfg.r16(pos + 0x28) & 0x20))


# repr=False: a dataclass repr walks the whole machine (parents, groups, drivers), which
# made one failing assertion take minutes to print
@dataclass(eq=False, slots=True, weakref_slot=True, repr=False)
class PciFunction:
    bdf: Bdf
    kind: str
    vendor: int
    device: int
    class_code: int
    config: C.ConfigSpace
    parent: PciFunction | None = None      # upstream bridge; None on a root bus
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    revision: int = 0
    multifunction: bool = False
    bars: list[Resource] = field(default_factory=lambda: [EMPTY] * 6)
    rom: Resource = EMPTY
    windows: list[Resource] = field(default_factory=list)  # bridges: io, mem, prefetch
    irq: int = 0
    msi_irqs: list[tuple[int, str]] = field(default_factory=list)
    # what the bound driver named each of its MSI/MSI-X vectors at request_irq (base/irqs.py);
    # empty when the topology declares msi_irqs itself (a recorded machine)
    msi_names: list[str] = field(default_factory=list)
    intx_irq: int | None = None            # dev->irq before MSI replaced it (restored when MSI goes)
    numa_node: int = -1
    driver: Driver | None = None
    driver_override: str | None = None
    netdevs: list[NetDev] = field(default_factory=list)
    sriov: Sriov | None = None
    physfn: PciFunction | None = None
    vf_id: int = -1
    group: IommuGroup | None = None
    pinned_group: int | None = None
    secondary: int = 0
    subordinate: int = 0
    enable_cnt: int = 0
    broken_parity: int = 0
    msi_bus: int = 1
    d3cold_allowed: int = 1
    dma_mask_bits: int = 32
    consistent_dma_mask_bits: int = 32
    firmware_node: str | None = None
    reset_methods: tuple[str, ...] = ()
    aspm: tuple[str, ...] = ()
    slot: str | None = None
    extra_dirs: tuple[str, ...] = ()
    rmrrs: tuple[tuple[int, int], ...] = ()   # RMRR ranges (reserved_regions: direct)
    machine: object = None                     # the owning Machine (container_of, for stores)
    wakeup_enabled: bool = False               # power/wakeup: a WoL driver enables it at probe
    power_state: str = "D0"                    # "unknown" until pci_enable_device for VFs
    dma_faults: int = 0                        # DMA remapping faults the handler counted
    dma_stats: object = None                   # its DMA counters once it did DMA (iommu/dma_stats.py)
    rom_image: bytes | None = None             # the expansion ROM's contents (else one is generated)
    vf_token: object = None                    # vfio-pci's VF token while it drives this PF (vfio/vf_token.py)
    atc: object = None                         # its ATS translation cache once ATS was enabled (intel/atc.py)
    disconnected: bool = False                 # pci_dev_set_disconnected(): surprise-removed, reads all ones
    # sysfs-set state (pci_dev fields the stores change)
    rom_attr_enabled: bool = False             # `echo 1 > rom` (pci_write_rom)
    async_suspend: bool = True                 # power/async (device_enable_async_suspend)
    runtime_auto: bool = False                 # power/control "auto" (pm_runtime_allow)
    aspm_disable: frozenset = frozenset()      # link/*: states the user disabled (link->aspm_disable)
    # read once at probe, as pci_setup_device()/pci_init_capabilities() cache them in
    # struct pci_dev: later config writes by root do not move them
    caps: dict = field(default=None, init=False)           # capability id -> offset (pcie_cap, msi_cap, ...)
    ext_caps: dict = field(default=None, init=False)       # extended capability id -> offset (acs_cap, ...)
    pcie_flags_reg: int = field(default=0, init=False)     # PCIe Capabilities register (pci_pcie_type)
    pme_support: int = field(default=0, init=False)        # PMC bits 15:11 (pci_pm_init)
    reset_supported: tuple = field(default=(), init=False)  # pci_init_reset_methods(): what "default" restores
    ari_forwarding: bool = field(default=False, init=False)  # pci_configure_ari() sets bridge->ari_enabled
    # what its uevents carry that never changes (path, keys), made at its first (uevent._static)
    uevent_static: tuple | None = field(default=None, init=False)
    # read_header(config) when the caller has it already: thousands of VFs made from one
    # config space template read it once (sriov.py)
    header: InitVar[tuple | None] = None

    def __post_init__(self, header: tuple | None = None) -> None:
        caps, ext_caps, self.pcie_flags_reg, self.pme_support, self.ari_forwarding = \
            header if header is not None else read_header(self.config)
        self.caps, self.ext_caps = dict(caps), dict(ext_caps)
        self.reset_supported = tuple(self.reset_methods)

    # --- what the kernel derives from the header -------------------------------
    def __repr__(self) -> str:
        return f"<PciFunction {self.bdf}>"

    @property
    def name(self) -> str:
        return self.bdf._name or str(self.bdf)     # (the Bdf's name, once made)

    @property
    def header_type(self) -> int:
        return KINDS[self.kind][1]

    @property
    def root_bus(self) -> tuple[int, int]:
        """(domain, bus) of the root bus above it, whose host bridge is pci<domain>:<bus> (a VF's: its PF's)."""
        f = self.physfn if self.is_virtfn else self
        while f.parent is not None:
            f = f.parent
        return f.bdf.domain, f.bdf.bus

    @property
    def is_bridge(self) -> bool:
        return self.header_type == 1

    @property
    def pcie_cap(self) -> int | None:
        return self.caps.get(C.CAP_PCIE)

    @property
    def pcie_type(self) -> int | None:
        return None if self.pcie_cap is None else (self.pcie_flags_reg >> 4) & 0xF

    @property
    def is_virtfn(self) -> bool:
        return self.physfn is not None

    @property
    def is_physfn(self) -> bool:
        return self.sriov is not None

    @property
    def nr_cpus(self) -> int:
        return self.machine.nr_cpus

    @property
    def has_aer(self) -> bool:
        return C.EXT_AER in self.ext_caps

    @property
    def wakeup_capable(self) -> bool:
        """device_set_wakeup_capable(): PME support in the PM capability, or an ACPI
        companion that can wake the system (what firmware_node stands for here)."""
        return bool(self.pme_support) or self.firmware_node is not None

    @property
    def ari_enabled(self) -> int:
        """ARI forwarding on the bridge above (pci_configure_ari sets bus->self->ari_enabled)."""
        up = self.physfn.parent if self.physfn else self.parent
        return 1 if up is not None and up.ari_forwarding else 0

    def config_read(self, off: int, n: int) -> bytes:
        if self.disconnected:     # pci_dev_is_disconnected(): the card is gone, reads complete as all ones
            return b"\xff" * n
        return self.config.read(off, n)

    def link_speed(self, current: bool) -> str:
        pos = self.pcie_cap
        reg = self.config.r16(pos + 0x12) if current else self.config.r32(pos + 0x0C)
        return LINK_SPEEDS.get(reg & 0xF, "Unknown") + "\n"

    def link_width(self, current: bool) -> int:
        pos = self.pcie_cap
        reg = self.config.r16(pos + 0x12) if current else self.config.r32(pos + 0x0C)
        return (reg >> 4) & 0x3F

    @property
    def acs_ctrl(self) -> tuple[int, int] | None:
        """(capability, control) of the ACS extended capability, if any."""
        pos = self.ext_caps.get(C.EXT_ACS)
        return None if pos is None else (self.config.r16(pos + 4), self.config.r16(pos + 6))

    def type_str(self) -> str:
        """pci_type_str() (probe.c, 6.9 and later): what pci_setup_device's line ends with."""
        ptype = self.pcie_type
        if ptype is not None:
            return PCIE_TYPE_STR[ptype] if ptype < len(PCIE_TYPE_STR) else "PCIe unknown"
        return "conventional PCI bridge" if self.is_bridge else "conventional PCI endpoint"

    def setup_line(self, with_type: bool) -> str:
        """The `[vendor:device] type NN class 0x...` line pci_setup_device prints."""
        line = "[%04x:%04x] type %02x class %#08x" % (self.vendor, self.device, self.header_type, self.class_code)
        return f"{line} {self.type_str()}" if with_type else line

    def modalias(self) -> str:
        c = self.class_code
        return "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X" % (
            self.vendor, self.device, self.subsystem_vendor, self.subsystem_device,
            c >> 16, (c >> 8) & 0xFF, c & 0xFF)

    def resource_lines(self, sriov_bars: list[Resource]) -> str:
        # 6.x with CONFIG_PCI_IOV: BAR0-5, ROM, IOV BAR0-5, and bridge windows
        res = list(self.bars) + [self.rom] + (sriov_bars or [EMPTY] * 6)
        if self.is_bridge:
            res += self.windows + [EMPTY] * (4 - len(self.windows))
        return "".join(r.line() for r in res)

    # --- expansion ROM (drivers/pci/rom.c) --------------------------------------------
    def rom_contents(self) -> bytes:
        """What the ROM BAR decodes: the topology's image, or a generated one (a legacy
        header 55 AA and a PCIR structure naming this function, the image as long as
        the BAR, no code, checksummed to zero)."""
        size = self.rom.size
        if self.rom_image is not None:
            return self.rom_image[:size].ljust(size, b"\0")
        img = bytearray(size)
        if size < 512:
            return bytes(img)
        units = min(size // 512, 0xFFFF)
        img[0:3] = b"\x55\xaa" + bytes([min(units, 0xFF)])
        img[0x18:0x1A] = (0x1C).to_bytes(2, "little")
        pcir = 0x1C
        img[pcir:pcir + 4] = b"PCIR"
        img[pcir + 4:pcir + 8] = self.vendor.to_bytes(2, "little") + self.device.to_bytes(2, "little")
        img[pcir + 0x0A:pcir + 0x0C] = (0x18).to_bytes(2, "little")
        img[pcir + 0x0D:pcir + 0x10] = self.class_code.to_bytes(3, "little")
        img[pcir + 0x10:pcir + 0x12] = units.to_bytes(2, "little")
        img[pcir + 0x15] = 0x80                                   # last image
        img[units * 512 - 1] = -sum(img) & 0xFF
        return bytes(img)

    def map_rom(self) -> bytes | None:
        """pci_map_rom(): the images as pci_get_rom_size() walks them (55 AA, then the
        PCIR structure; stop at the last image), never longer than the BAR. None (and
        the kernel's log line) when the first image's header is not valid."""
        rom = self.rom_contents()
        pos = 0
        while True:
            sig = int.from_bytes(rom[pos:pos + 2], "little")
            if sig != 0xAA55:
                self.machine.kmsg.dev(self, "Invalid PCI ROM header signature: expecting 0xaa55, got %#06x" % sig)
                break
            pds = pos + int.from_bytes(rom[pos + 24:pos + 26], "little")
            data_sig = int.from_bytes(rom[pds:pds + 4], "little")
            if data_sig != 0x52494350:
                self.machine.kmsg.dev(self, "Invalid PCI ROM data signature: expecting 0x52494350, got %#010x"
                                      % data_sig)
                break
            last = rom[pds + 21] & 0x80 if pds + 21 < len(rom) else 0x80
            length = int.from_bytes(rom[pds + 16:pds + 18], "little")
            pos += length * 512
            if pos >= len(rom) or not length or last:
                break
        size = min(pos, len(rom))
        return rom[:size] if size else None

"""A PCIe hot-plug port's registers as pciehp reads them (drivers/pci/hotplug/pciehp_hpc.c),
and what the PCI core reserves behind an empty hot-plug bridge (drivers/pci/pci.c's
`pci=hp*size=` parameters, drivers/pci/setup-bus.c pbus_size_mem's add_size)."""
from __future__ import annotations

from vfakefs.model.pci import config as C
from vfakefs.model.pci.pci import IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH, Resource

LNKCAP, LNKSTA, SLTCAP, SLTSTA, SLTCAP2 = 0x0C, 0x12, 0x14, 0x1A, 0x34   # in the PCI Express capability
LNKCAP_DLLLARC = 1 << 20
SLTSTA_PDS, LNKSTA_DLLLA = 0x0040, 0x2000           # Presence Detect State, Data Link Layer Link Active
# DEFAULT_HOTPLUG_IO_SIZE, DEFAULT_HOTPLUG_MMIO_SIZE, DEFAULT_HOTPLUG_MMIO_PREF_SIZE (pci.c)
HP_DEFAULTS = {"io": 256, "mem": 2 << 20, "pref": 2 << 20}
_HP_PARAMS = {"hpiosize": ("io",), "hpmemsize": ("mem", "pref"), "hpmmiosize": ("mem",),
              "hpmmioprefsize": ("pref",)}


def memparse(text: str) -> int | None:
    """lib/cmdline.c memparse(): a number (C notation) with an optional K/M/G/T suffix."""
    mult = {"k": 10, "m": 20, "g": 30, "t": 40}.get(text[-1:].lower(), 0)
    try:
        return int(text[:-1] if mult else text, 0) << mult
    except ValueError:
        return None


def hotplug_sizes(cmdline: str) -> dict[str, int]:
    """pci_setup(): `pci=hpiosize=`, `hpmemsize=` (both memory windows), `hpmmiosize=`,
    `hpmmioprefsize=`: what an empty hot-plug bridge's windows get at boot."""
    out = dict(HP_DEFAULTS)
    for word in cmdline.split():
        if not word.startswith("pci="):
            continue
        for opt in word[4:].split(","):
            key, _, value = opt.partition("=")
            n = memparse(value) if key in _HP_PARAMS else None
            if n is not None:
                for kind in _HP_PARAMS[key]:
                    out[kind] = n
    return out


def reserve_windows(alloc, cmdline: str) -> list[Resource]:
    """The windows of a hot-plug bridge with nothing below it: the hot-plug sizes rounded to the
    windows' granularity (4K of I/O, 1M of memory), from the boot's address allocator."""
    sizes = hotplug_sizes(cmdline)
    out = []
    for kind, space, gran, flags in (("io", "io", 0x1000, IORESOURCE_IO),
                                     ("mem", "mem32", 0x100000, IORESOURCE_MEM),
                                     ("pref", "mem64", 0x100000,
                                      IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64 | 0x1)):
        size = -(-sizes[kind] // gran) * gran
        out.append(Resource(alloc.take(space, size), size, flags) if size else Resource(0, 0, 0))
    return out


def slot_number(name: str) -> int | None:
    """The Physical Slot Number a numeric slot name stands for (13 bits of Slot Capabilities)."""
    return int(name) if name.isdigit() and int(name) < 1 << 13 else None


def program_slot(cfg: C.ConfigSpace, name: str, present: bool) -> None:
    """A hot-plug port's slot registers at boot: the slot's number in Slot Capabilities, and
    presence and link as the card (or its absence) leaves them."""
    pos = cfg.find_cap(C.CAP_PCIE)
    psn = slot_number(name)
    if psn is not None:
        cfg.w32(pos + SLTCAP, cfg.r32(pos + SLTCAP) & 0x7FFFF | psn << 19)
    # Data Link Layer Link Active Reporting: what surprise hot-plug needs to see the link go
    cfg.w32(pos + LNKCAP, cfg.r32(pos + LNKCAP) | LNKCAP_DLLLARC)
    set_presence(cfg, pos, present)


def set_presence(cfg: C.ConfigSpace, pos: int, present: bool) -> None:
    """A card plugged (the link trains: DLLLA) or pulled (presence and link gone)."""
    sta, lnk = cfg.r16(pos + SLTSTA), cfg.r16(pos + LNKSTA)
    cfg.w16(pos + SLTSTA, sta | SLTSTA_PDS if present else sta & ~SLTSTA_PDS)
    cfg.w16(pos + LNKSTA, lnk | LNKSTA_DLLLA if present else lnk & ~LNKSTA_DLLLA)


def train_link(port, dev) -> None:
    """The link a plugged card trains to: the lower of the two ends' top speeds and widths
    (Link Capabilities), in the port's Link Status."""
    pos, other = port.pcie_cap, dev.pcie_cap
    if pos is None or other is None:
        return
    a, b = port.config.r32(pos + 0x0C), dev.config.r32(other + 0x0C)
    speed, width = min(a & 0xF, b & 0xF), min((a >> 4) & 0x3F, (b >> 4) & 0x3F)
    lnk = port.config.r16(pos + LNKSTA)
    port.config.w16(pos + LNKSTA, lnk & ~0x3FF | width << 4 | speed)


_SLTCAP_FLAGS = (("AttnBtn", 1 << 0), ("PwrCtrl", 1 << 1), ("MRL", 1 << 2), ("AttnInd", 1 << 3), ("PwrInd", 1 << 4),
                 ("HotPlug", 1 << 6), ("Surprise", 1 << 5), ("Interlock", 1 << 17), ("NoCompl", 1 << 18))


def init_line(port) -> str:
    """pcie_init(): what pciehp says of the slot as it binds to the port (after PME and AER)."""
    pos = port.pcie_cap
    cap, cap2, lnk = (port.config.r32(pos + o) for o in (SLTCAP, SLTCAP2, LNKCAP))
    flag = lambda on: "+" if on else "-"     # noqa: E731
    words = [f"{name}{flag(cap & bit)}" for name, bit in _SLTCAP_FLAGS]
    words += [f"IbPresDis{flag(cap2 & 1)}", f"LLActRep{flag(lnk & LNKCAP_DLLLARC)}"]
    return f"pciehp: Slot #{cap >> 19} " + " ".join(words)

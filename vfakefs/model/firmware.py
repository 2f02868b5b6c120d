"""What the firmware hands the kernel besides the ACPI DMAR table (boot.py): the e820
memory map, the host bridge's windows (ACPI _CRS of PCI0) and what it left unassigned
for the kernel to assign (a bridge's I/O window, an IOV BAR).

A topology declares them in `[firmware]`; a recorded machine's values come from its boot
log (qemu-ref.toml). Without one a machine gets DEFAULT_*: a PC whose firmware assigned
everything, with RAM below 2 GiB and windows that hold vfakefs's own BAR allocator
(pci/resources.py Allocator: io from 0xc000, 32-bit memory from 0xf0000000, 64-bit from
0x380000000000).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_WINDOW

# e820 types as e820_print_type() prints them, and the names /proc/iomem gives them (e820_type_to_string)
E820_TYPES = {"usable": "System RAM", "reserved": "Reserved", "ACPI data": "ACPI Tables",
              "ACPI NVS": "ACPI Non-volatile Storage", "unusable": "Unusable memory"}
DEFAULT_E820 = ((0x0, 0x9FBFF, "usable"), (0x9FC00, 0x9FFFF, "reserved"), (0xF0000, 0xFFFFF, "reserved"),
                (0x100000, 0x7FFFFFFF, "usable"), (0x80000000, 0x8FFFFFFF, "reserved"),
                (0xFED1C000, 0xFED1FFFF, "reserved"))
DEFAULT_PCI_WINDOWS = ((0x0, 0xCF7, "io"), (0xD00, 0xFFFF, "io"), (0xA0000, 0xBFFFF, "mem"),
                       (0x90000000, 0xFBFFFFFF, "mem"), (0x380000000000, 0x3FFFFFFFFFFF, "mem"))
DEFAULT_MMCONFIG = 0x80000000      # the MCFG table's ECAM base for segment 0, buses 00-ff (256 MiB)
DEFAULT_BIOS_YEAR = 2019
KEYS = frozenset({"e820", "pci_windows", "unassigned", "mmconfig", "bios_year"})
UNASSIGNABLE = ("BAR 0", "BAR 1", "BAR 2", "BAR 3", "BAR 4", "BAR 5", "ROM", "VF BAR 0", "VF BAR 1", "VF BAR 2",
                "VF BAR 3", "VF BAR 4", "VF BAR 5", "io window", "mem window", "pref window")


@dataclass(frozen=True)
class Firmware:
    e820: tuple = DEFAULT_E820                       # (start, end, type), BIOS order
    pci_windows: tuple = ()                          # (start, end, IORESOURCE_* flags) of the root bus
    unassigned: dict = field(default_factory=dict)   # Bdf -> frozenset of resource names
    mmconfig: int | None = DEFAULT_MMCONFIG          # ECAM base of segment 0000 [bus 00-ff]
    bios_year: int = DEFAULT_BIOS_YEAR               # the DMI BIOS date's year (pci_use_e820)

    @classmethod
    def from_table(cls, t: dict) -> Firmware:
        wins = tuple((s, e, (IORESOURCE_IO if kind == "io" else IORESOURCE_MEM) | IORESOURCE_WINDOW)
                     for s, e, kind in t.get("pci_windows", DEFAULT_PCI_WINDOWS))
        return cls(tuple(tuple(x) for x in t.get("e820", DEFAULT_E820)), wins,
                   {Bdf.from_str(k): frozenset(v) for k, v in t.get("unassigned", {}).items()},
                   t.get("mmconfig", DEFAULT_MMCONFIG), t.get("bios_year", DEFAULT_BIOS_YEAR))

    @property
    def ecam(self) -> tuple[int, int] | None:
        """The MCFG region: 1 MiB of config space per bus, 256 buses."""
        return None if self.mmconfig is None else (self.mmconfig, self.mmconfig + (256 << 20) - 1)


def check(err, t, bdfs: set) -> None:
    """`[firmware]`'s keys and values, one line naming the field."""
    if not isinstance(t, dict) or set(t) - KEYS:
        raise err("firmware", f"a table of {', '.join(sorted(KEYS))}")

    def ranges(key, kinds):
        v = t.get(key, [])
        ok = isinstance(v, list) and all(
            isinstance(x, list) and len(x) == 3 and all(isinstance(n, int) and not isinstance(n, bool) for n in x[:2])
            and 0 <= x[0] <= x[1] < 1 << 64 and x[2] in kinds for x in v)
        if not ok:
            raise err(f"firmware.{key}", f"each entry is [start, end, type] with start <= end, type one of "
                                         f"{', '.join(kinds)}")
    ranges("e820", tuple(E820_TYPES))
    year = t.get("bios_year", DEFAULT_BIOS_YEAR)
    if not isinstance(year, int) or isinstance(year, bool) or not 1980 <= year <= 2100:
        raise err("firmware.bios_year", f"{year!r} is not a year")
    mm = t.get("mmconfig", DEFAULT_MMCONFIG)
    if not isinstance(mm, int) or isinstance(mm, bool) or mm < 0 or mm % (256 << 20) or mm >= 1 << 52:
        raise err("firmware.mmconfig", f"{mm!r} is not an ECAM base (256 MiB aligned)")
    ranges("pci_windows", ("io", "mem"))
    un = t.get("unassigned", {})
    if not isinstance(un, dict):
        raise err("firmware.unassigned", "a table of \"<bdf>\" = [resource names]")
    for k, v in un.items():
        if k not in bdfs:
            raise err(f"firmware.unassigned.{k}", "not a function of this topology")
        if not isinstance(v, list) or not all(n in UNASSIGNABLE for n in v):
            raise err(f"firmware.unassigned.{k}", f"a list of {', '.join(UNASSIGNABLE)}")


def e820_lines(fw: Firmware) -> list[str]:
    """e820__print_table("BIOS-e820") after the `BIOS-provided physical RAM map:` header."""
    return ["BIOS-provided physical RAM map:"] + [
        "BIOS-e820: [mem %#018x-%#018x] %s" % (s, e, kind) for s, e, kind in fw.e820]


def ecam_lines(fw: Firmware, profile) -> list[str]:
    """pci_mmconfig_add() and is_mmconf_reserved() (the range an e820 `reserved` entry
    covers), then pci_direct_init()'s type 1 access."""
    out = []
    if fw.ecam is not None:
        s, e = fw.ecam
        f = dict(res="[mem %#010x-%#010x]" % (s, e), base="%#x" % s, domain="0000", bus="00-ff")
        out.append(profile.ecam_lines[0].format(**f))
        if any(kind == "reserved" and a <= s and e <= b for a, b, kind in fw.e820):
            out.append(profile.ecam_lines[1].format(**f))
    return out + ["PCI: Using configuration type 1 for base access"]


def host_bridge_lines(fw: Firmware, cmdline: str) -> list[str]:
    """arch/x86/pci/acpi.c pci_acpi_crs_quirks() (the _CRS windows; E820 clipping unless the
    BIOS is from 2023 on) and acpi_pci_root_add()'s root bridge, before its bus is scanned."""
    args = cmdline.split()
    use_e820 = "pci=use_e820" in args or (fw.bios_year < 2023 and "pci=no_e820" not in args)
    return ['PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug',
            "PCI: %s E820 reservations for host bridge windows" % ("Using" if use_e820 else "Ignoring"),
            "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])"]

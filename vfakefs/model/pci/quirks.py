"""Header quirks whose lines the kernel log shows (drivers/pci/quirks.c, DECLARE_PCI_FIXUP_HEADER):
they run at the end of pci_setup_device() and read the function's own config space.

Only the ICH LPC bridges' I/O claims are modelled: quirk_ich6_lpc / quirk_ich7_lpc claim
the ACPI/GPIO/TCO and GPIO ranges the firmware enabled (ich6_lpc_acpi_gpio ->
quirk_io_region) and, from ICH7 on, name the LPC generic I/O decode ranges.
"""
from __future__ import annotations

INTEL = 0x8086
ICH6_LPC = frozenset({0x2640, 0x2641})                                  # ICH6_0, ICH6_1
ICH7_LPC = frozenset({0x27B8, 0x27B9, 0x27BD, 0x2810, 0x2811, 0x2812, 0x2814, 0x2815,   # ICH7_*, ICH8_*
                      0x2912, 0x2914, 0x2916, 0x2918, 0x3A16, 0x3A18, 0x3A1A})         # ICH9_*, ICH10_*


def _io_region(f, reg: int, size: int, name: str) -> list[str]:
    """quirk_io_region(): the 16-bit base at reg, aligned down to the size; nothing when 0."""
    base = f.config.r16(reg) & ~(size - 1) & 0xFFFF
    if not base:
        return []
    return ["quirk: [io  0x%04x-0x%04x] claimed by %s" % (base, base + size - 1, name)]   # %pR of an io range


def _ich6_acpi_gpio(f) -> list[str]:
    out = []
    if f.config.r8(0x44) & 0x80:                       # ICH6_ACPI_CNTL_ENABLE
        out += _io_region(f, 0x40, 128, "ICH6 ACPI/GPIO/TCO")
    if f.config.r8(0x4C) & 0x10:                       # ICH6_GPIO_CNTL_ENABLE
        out += _io_region(f, 0x48, 64, "ICH6 GPIO")
    return out


def header(f) -> list[str]:
    """The lines the header fixups print for f (without the `pci <bdf>: ` prefix)."""
    if f.vendor != INTEL or f.is_virtfn:
        return []
    if f.device in ICH6_LPC:
        return _ich6_acpi_gpio(f)
    if f.device in ICH7_LPC:
        out = _ich6_acpi_gpio(f)
        for n, reg in enumerate((0x84, 0x88, 0x8C, 0x90), 1):   # ich7_lpc_generic_decode
            val = f.config.r32(reg)
            if val & 1:
                out.append("ICH7 LPC Generic IO decode %d PIO at %04x (mask %04x)"
                           % (n, val & 0xFFFC, (val >> 16) & 0xFC | 3))
        return out
    return []

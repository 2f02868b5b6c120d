"""The firmware's ACPI DMAR table (/sys/firmware/acpi/tables/DMAR, root only), read into the
topology's `[acpi.dmar]`: the header ids the boot log prints, the first DRHD's flags and
device scopes (IOAPIC, HPET), and each ATSR with the root ports it names. The kernel enables
ATS only below a root port an ATSR covers (dmar_ats_supported), which no other sysfs file shows.

Layout: VT-d specification 8.1 (DMA Remapping Reporting Structure) and 8.3-8.5 (DRHD, ATSR,
device scope); drivers/iommu/intel/dmar.c parses the same."""
from __future__ import annotations

import struct

HEADER = 48                          # ACPI header (36) + host address width, flags, reserved (12)
DRHD, ATSR = 0, 2
SCOPE_BRIDGE, SCOPE_IOAPIC, SCOPE_HPET = 2, 3, 4


def _scopes(data: bytes, start: int, end: int):
    """(type, enumeration id, start bus, [(dev, fn), ...]) of each device scope in [start, end)."""
    pos = start
    while pos + 6 <= end:
        kind, length = data[pos], data[pos + 1]
        if length < 6 or pos + length > end:
            return
        path = [(data[i], data[i + 1]) for i in range(pos + 6, pos + length - 1, 2)]
        yield kind, data[pos + 4], data[pos + 5], path
        pos += length


def _text(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip(" \0")


def parse(data: bytes) -> dict:
    """`[acpi.dmar]` fields from the table's bytes; ValueError when it is not a DMAR table."""
    if len(data) < HEADER or data[:4] != b"DMAR":
        raise ValueError("not a DMAR table")
    length = min(struct.unpack_from("<I", data, 4)[0], len(data))
    out = {"revision": data[8], "oem_id": _text(data[10:16]), "oem_table_id": _text(data[16:24]),
           "oem_revision": struct.unpack_from("<I", data, 24)[0], "creator_id": _text(data[28:32]),
           "creator_revision": struct.unpack_from("<I", data, 32)[0]}
    atsr = []
    pos, drhd_seen = HEADER, False
    while pos + 4 <= length:
        kind, size = struct.unpack_from("<HH", data, pos)
        if size < 4 or pos + size > length:
            break
        if kind == DRHD and not drhd_seen and size >= 16:
            drhd_seen = True
            out["flags"] = data[pos + 4]
            out["hpet"] = False
            for skind, enum_id, _bus, _path in _scopes(data, pos + 16, pos + size):
                if skind == SCOPE_IOAPIC and "ioapic_id" not in out:
                    out["ioapic_id"] = enum_id
                elif skind == SCOPE_HPET:
                    out["hpet"] = True
        elif kind == ATSR and size >= 8:
            segment = struct.unpack_from("<H", data, pos + 6)[0]
            ports = ["%04x:%02x:%02x.%x" % (segment, bus, path[0][0], path[0][1])
                     for skind, _e, bus, path in _scopes(data, pos + 8, pos + size) if skind == SCOPE_BRIDGE and path]
            atsr.append({"flags": data[pos + 4], "ports": ports})
        pos += size
    out["atsr"] = atsr
    return out

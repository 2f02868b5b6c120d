"""Device-IOTLB invalidation (VT-d spec 6.5.2.5): the descriptor the kernel queues to empty
a device's ATC (qi_flush_dev_iotlb), and the tag a domain keeps per ATS device to reach it
(cache.c's CACHE_TAG_DEVTLB). Plain Python: dmar.py imports it on the mount path."""
from __future__ import annotations

from dataclasses import dataclass

MAX_AGAW_PFN_WIDTH = 52            # MAX_AGAW_WIDTH (64) - VTD_PAGE_SHIFT: "the whole cache"
QI_DIOTLB_TYPE = 0x3
QI_DEV_IOTLB_MAX_INVS = 32         # a queue depth of 32 (or more) goes in the descriptor as 0


def dev_iotlb_desc(sid: int, pfsid: int, qdep: int, addr: int, mask: int) -> tuple[int, int]:
    """(qw0, qw1) of a device-IOTLB invalidation descriptor as qi_flush_dev_iotlb builds it:
    SID in bits 47:32, MAX_INVS_PD bits 20:16, PFSID split 15:12 / 63:52, type 3; the
    address with S (bit 0) set and the bits below the size's top bit set to 1 for 2**mask
    pages (VT-d 6.5.2.5: the lowest clear bit above 12 gives the size)."""
    if mask:
        addr |= (1 << (12 + mask - 1)) - 1
        qw1 = (addr & ~0xFFF) | 1
    else:
        qw1 = addr & ~0xFFF
    if qdep >= QI_DEV_IOTLB_MAX_INVS:
        qdep = 0
    qw0 = sid << 32 | (qdep & 0x1F) << 16 | QI_DIOTLB_TYPE | (pfsid & 0xF) << 12 | (pfsid & 0xFFF0) << 48
    return qw0, qw1 & ((1 << 64) - 1)


@dataclass
class DevTlbTag:
    """What the kernel keeps to flush one device's ATC (device_domain_info: bus/devfn,
    pfsid, ats_qdep), with the ATC itself (intel/atc.py)."""
    sid: int
    pfsid: int
    qdep: int
    atc: object


def queue_dev_iotlb(u, tag: DevTlbTag, addr: int, mask: int) -> None:
    """qi_flush_dev_iotlb(): queue the descriptor; the device drops what it covers."""
    u.queue_invalidation(*dev_iotlb_desc(tag.sid, tag.pfsid, tag.qdep, addr, mask))
    tag.atc.invalidate(addr, mask)

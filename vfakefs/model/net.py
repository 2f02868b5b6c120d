"""Network interfaces that net drivers register for their devices, and the permanent
address each function's hardware carries."""
from __future__ import annotations

import re
from dataclasses import dataclass

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(eq=False, slots=True)
class NetDev:
    name: str
    dev: object              # the PciFunction
    ifindex: int
    mac: str
    subdir: str | None = None  # e.g. "virtio0": the netdev hangs below a virtio device


def permanent_address(declared: str | None, dev, n: int = 0) -> str:
    """The address a driver reads from the function's EEPROM/NVM at probe (perm_addr): the
    topology's `mac` when it declares one, else one derived from the function's address, a
    locally administered unicast 02:DD:DD:BB:DF:NN (domain, bus, devfn, the n-th netdev).
    It is a property of the function: the same across unbind/bind, remove/rescan and a
    change of driver, never taken from a counter."""
    if declared:
        base = int(declared.replace(":", ""), 16)
        return ":".join("%02x" % b for b in (base + n).to_bytes(6, "big"))
    b = dev.bdf
    return "02:%02x:%02x:%02x:%02x:%02x" % (b.domain >> 8 & 0xFF, b.domain & 0xFF, b.bus, b.dev << 3 | b.fn, n)

"""Network interfaces that net drivers register for their devices (net/core/dev.c), and
the permanent address each function's hardware carries."""
from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from vfakefs.model.base import irqs
from vfakefs.model.errors import SysfsError

MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# if.h: flags a store can set directly (__dev_change_flags), and the ones with their own path
IFF_UP, IFF_BROADCAST, IFF_LOOPBACK, IFF_PROMISC, IFF_ALLMULTI = 0x1, 0x2, 0x8, 0x100, 0x200
IFF_PLAIN = 0x4 | 0x20 | 0x80 | 0x1000 | 0x2000 | 0x4000 | 0x8000  # DEBUG NOTRAILERS NOARP MULTICAST PORTSEL AUTOMEDIA DYNAMIC


@dataclass(eq=False, slots=True)
class NetDev:
    name: str
    dev: object              # the PciFunction (None for lo)
    ifindex: int
    mac: str
    subdir: str | None = None  # e.g. "virtio0": the netdev hangs below a virtio device
    mtu: int = 1500
    tx_queue_len: int = 1000
    flags: int = IFF_UP | IFF_BROADCAST | 0x1000   # 0x1003: up, broadcast, multicast
    arp_type: int = 1                              # ARPHRD_ETHER

    @classmethod
    def loopback(cls) -> NetDev:
        """loopback_setup(): 64 KiB MTU, IFF_LOOPBACK, ARPHRD_LOOPBACK, no MTU limits."""
        return cls("lo", None, 1, "00:00:00:00:00:00", mtu=65536, flags=IFF_UP | IFF_LOOPBACK, arp_type=772)

    @property
    def operstate(self) -> str:
        if not self.running:
            return "down"
        return "unknown" if self.flags & IFF_LOOPBACK else "up"   # lo has no link state

    @property
    def running(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def mtu_range(self) -> tuple[int, int]:
        if self.dev is None:
            return (0, 0)                      # lo: min_mtu 0, max_mtu 0 (no upper check)
        drv = self.dev.driver
        return drv.mtu_range if drv is not None else (68, 1500)

    # --- what net-sysfs.c's stores call ----------------------------------------------
    def set_mtu(self, value: int) -> None:
        """change_mtu() -> dev_set_mtu((int)value): dev_validate_mtu() against the
        driver's min_mtu/max_mtu, EINVAL outside; the same MTU again is a no-op."""
        new = value & 0xFFFFFFFF
        new = new - (1 << 32) if new >= 1 << 31 else new
        lo, hi = self.mtu_range
        if new < 0 or new < lo or (hi > 0 and new > hi):
            raise SysfsError(errno.EINVAL)
        self.mtu = new

    def set_tx_queue_len(self, value: int) -> None:
        """change_tx_queue_len(): the value must fit an unsigned int (ERANGE)."""
        if value >= 1 << 32:
            raise SysfsError(errno.ERANGE)
        self.tx_queue_len = value

    def set_carrier(self, value: int) -> None:
        """change_carrier(): EINVAL while down; then dev_change_carrier(), EOPNOTSUPP
        for every driver here (none has ndo_change_carrier)."""
        if not self.running:
            raise SysfsError(errno.EINVAL)
        raise SysfsError(errno.EOPNOTSUPP)

    def set_flags(self, value: int, log) -> None:
        """change_flags() -> dev_change_flags((unsigned int)value): the plain flags are
        copied, IFF_UP opens or closes the interface, IFF_PROMISC and IFF_ALLMULTI go
        through their counters (promiscuity is logged, as __dev_set_promiscuity)."""
        value &= 0xFFFFFFFF
        old = self.flags
        new = (value & IFF_PLAIN) | (old & ~IFF_PLAIN & ~(IFF_PROMISC | IFF_ALLMULTI) & ~IFF_UP)
        new |= value & IFF_UP
        for bit in (IFF_PROMISC, IFF_ALLMULTI):
            new |= value & bit
        self.flags = new
        if (old ^ new) & IFF_UP and self.dev is not None:
            irqs.netdev_state(self.dev)             # ndo_open / ndo_stop: request_irq / free_irq
        if (old ^ new) & IFF_PROMISC and log is not None:
            log(self, "%s promiscuous mode" % ("entered" if new & IFF_PROMISC else "left"))


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

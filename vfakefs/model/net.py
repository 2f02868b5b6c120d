"""Network interfaces that net drivers register for their devices (net/core/dev.c), and
the permanent address each function's hardware carries."""
from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, field

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
    carrier: bool = True          # the link partner's signal (a cable plugged in): netif_carrier_ok()
    # the simulated machine's network configuration for this name (topology `[net.<name>]`,
    # as a network manager applies it when the interface appears): "addr/len" strings, Routes
    addresses: tuple[str, ...] = ()
    routes: tuple[Route, ...] = field(default=())

    @classmethod
    def loopback(cls) -> NetDev:
        """loopback_setup(): 64 KiB MTU, IFF_LOOPBACK, ARPHRD_LOOPBACK, no MTU limits."""
        return cls("lo", None, 1, "00:00:00:00:00:00", mtu=65536, flags=IFF_UP | IFF_LOOPBACK, arp_type=772)

    @property
    def operstate(self) -> str:
        """rfc2863_policy(): down while closed or without carrier (a device with no
        lower device: IF_OPER_DOWN); lo has no link state."""
        if not self.running or not self.carrier:
            return "down"
        return "unknown" if self.flags & IFF_LOOPBACK else "up"

    def _changed(self) -> None:
        """Tell the machine's network watchers (the namespaces mirroring it)."""
        m = getattr(self.dev, "machine", None)
        if m is not None:
            m.netdev_changed(self)

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
        if new != self.mtu:
            self.mtu = new
            self._changed()

    def set_tx_queue_len(self, value: int) -> None:
        """change_tx_queue_len(): the value must fit an unsigned int (ERANGE)."""
        if value >= 1 << 32:
            raise SysfsError(errno.ERANGE)
        if value != self.tx_queue_len:
            self.tx_queue_len = value
            self._changed()

    def set_carrier(self, value: int) -> None:
        """change_carrier(): EINVAL while down; then dev_change_carrier(), EOPNOTSUPP
        for every driver here (none has ndo_change_carrier)."""
        if not self.running:
            raise SysfsError(errno.EINVAL)
        raise SysfsError(errno.EOPNOTSUPP)

    def link_event(self, up: bool) -> bool:
        """The link partner came or went (a cable plugged or pulled; vfakefs's `carrier`
        control): the driver's watchdog calls netif_carrier_on/off. Whether it changed."""
        if self.carrier == up:
            return False
        self.carrier = up
        self._changed()
        return True

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
        if old != new:
            self._changed()
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


@dataclass(frozen=True, slots=True)
class Route:
    """A route of the simulated machine's configuration: `default` or a prefix, through a
    gateway or directly on the link (scope link), with an optional metric."""
    dest: str                        # "default" or a network in its canonical form, "10.0.0.0/8"
    via: str | None = None
    metric: int | None = None

    @property
    def family(self) -> int:
        net = self.via or self.dest
        return 6 if ":" in net else 4

    def __str__(self) -> str:
        return self.dest + (f" via {self.via}" if self.via else "") + \
            (f" metric {self.metric}" if self.metric is not None else "")


def parse_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """An interface address "192.168.1.10/24" (a prefix length is required: `ip addr add`
    without one means /32, which a topology almost never means). ValueError says why."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"{text!r} is not an address with its prefix length (e.g. \"192.168.1.10/24\")")
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an address with its prefix length (e.g. \"192.168.1.10/24\")") from None


def parse_route(text: str) -> Route:
    """`default via 192.168.1.1`, `10.0.0.0/8 via 192.168.1.254 metric 100`, `10.1.0.0/16`
    (ip-route(8)'s words: a destination, then `via` and `metric`, each at most once)."""
    words = text.split() if isinstance(text, str) else []
    if not words:
        raise ValueError(f"{text!r} is not a route (\"<prefix>|default [via <gateway>] [metric <n>]\")")
    dest = words[0]
    if dest != "default":
        try:
            dest = str(ipaddress.ip_network(dest, strict=True))
        except ValueError:
            raise ValueError(f"{text!r}: {words[0]!r} is not a network prefix (host bits must be zero) "
                             f"or `default`") from None
    opts: dict[str, str] = {}
    rest = words[1:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("via", "metric") or rest[0] in opts:
            raise ValueError(f"{text!r}: expected `via <gateway>` and/or `metric <n>` after the destination")
        opts[rest[0]] = rest[1]
        rest = rest[2:]
    via = opts.get("via")
    if via is not None:
        try:
            via = str(ipaddress.ip_address(via))
        except ValueError:
            raise ValueError(f"{text!r}: {opts['via']!r} is not an address") from None
    metric = None
    if "metric" in opts:
        if not (opts["metric"].isascii() and opts["metric"].isdigit()) or int(opts["metric"]) >= 1 << 32:
            raise ValueError(f"{text!r}: metric {opts['metric']!r} is not a number 0..4294967295")
        metric = int(opts["metric"])
    r = Route(dest, via, metric)
    if dest != "default" and via is not None and \
            ipaddress.ip_network(dest).version != ipaddress.ip_address(via).version:
        raise ValueError(f"{text!r}: the gateway is not of the destination's family")
    return r


def dev_valid_name(name: str) -> bool:
    """dev_valid_name(): 1..IFNAMSIZ-1 characters, not . or .., no '/', ':' or white space."""
    return isinstance(name, str) and 0 < len(name.encode()) < 16 and name not in (".", "..") and \
        not any(c in "/:" or c.isspace() for c in name)


def check_net_config(name: str, cfg: dict) -> tuple[str, str] | None:
    """(key, why) for the first mistake in a `[net.<name>]` table, None when it is good:
    addresses, routes whose gateway lies in one of the interface's own networks (else the
    kernel refuses the route: fib_check_nh, "Nexthop has invalid gateway"), carrier."""
    if not isinstance(cfg, dict):
        return "", f"{cfg!r} is not a table"
    bad = set(cfg) - {"addresses", "routes", "carrier", "mtu"}
    if bad:
        return sorted(bad)[0], "unknown key (known: addresses, carrier, mtu, routes)"
    if not isinstance(cfg.get("carrier", True), bool):
        return "carrier", f"{cfg['carrier']!r} is not true or false"
    mtu = cfg.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        return "mtu", f"{mtu!r} is not an MTU (68..65535: ETH_MIN_MTU..IP_MAX_MTU)"
    nets = []
    for key in ("addresses", "routes"):
        if not isinstance(cfg.get(key, []), list):
            return key, f"{cfg[key]!r} is not a list"
    for a in cfg.get("addresses", []):
        try:
            nets.append(parse_address(a).network)
        except ValueError as e:
            return "addresses", str(e)
    for text in cfg.get("routes", []):
        try:
            r = parse_route(text)
        except ValueError as e:
            return "routes", str(e)
        gw = ipaddress.ip_address(r.via) if r.via is not None else None
        # an IPv6 gateway may be link-local: every IPv6 link has fe80::/64 (addrconf)
        if gw is not None and not (gw.version == 6 and gw.is_link_local) and not any(gw in n for n in nets):
            return "routes", f"{text!r}: gateway {r.via} is not on a network of {name}'s addresses"
    return None

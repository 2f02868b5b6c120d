"""`vfakefs run`'s network namespace, kept a mirror of the simulated machine's netdevs:
`ip link` inside shows the simulated NICs (names, MACs, ifindex as in /sys/class/net,
MTU, up/down, carrier), they come and go with them (VFs when sriov_numvfs is written,
unbind, remove), and `ip route` shows the simulated machine's addresses and routes
(the topology's `[net.<name>]`), never the host's (dpdk-devbind.py's "active
interface" check reads `ip -o route`).

The program's process makes the namespace (namespace.enter: CLONE_NEWNET, lo up) before
it hands its seccomp listener over; the daemon then opens /proc/<pid>/ns/net and fills
it before the program execs, and follows the model's changes until the program and its
children are gone (netmirror.py); what the program does to its links itself (`ip link
set eth0 down`, `mtu 9000`) goes the other way, into the simulated netdev.

Why tap devices: the simulated NICs must be ethernet links whose MAC, MTU, ifindex and
carrier we set. The kernel's dummy driver would do (IFLA_CARRIER), but hosts may lack its
module (the one this was written on does: `ip link add x type dummy` fails "Unknown device
type"); a veth's
peer shows in `ip link` as `eth0@if2 ... link-netnsid 0`; macvlan/ipvlan need a parent.
tun is in every kernel that can run a container: TUNSETIFINDEX names the ifindex (CRIU's
ioctl), TUNSETCARRIER sets the carrier, `ip link` shows a plain
`eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> ... state UP ... link/ether`. A tap has carrier
only while a file holds it, so the daemon keeps one open per interface; they are
persistent (TUNSETPERSIST), so closing them at the end costs nothing: the namespace's
teardown unregisters all its links at once. What shows that they are taps: `ip -d link`
(`tun type tap`), ethtool's driver (tun), the qdisc (pfifo_fast), and the MTU range the
kernel checks an `ip link set mtu` against (68..65521: a value the simulated driver refuses
is set back once the daemon hears of it).

The thread that opens a tap or a netlink socket must be in the namespace (the device and
the socket belong to the opener's namespace), and setns() moves the calling thread only:
each update runs in a worker thread that enters the namespace and leaves it again. The
trio loop's thread never moves."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
from dataclasses import dataclass

from vfakefs.syscall import rtnl

log = logging.getLogger("vfakefs")
CLONE_NEWNET = 0x40000000
TUNSETIFF, TUNSETPERSIST, TUNSETIFINDEX, TUNSETCARRIER = 0x400454CA, 0x400454CB, 0x400454DA, 0x400454E2
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
SIOCETHTOOL, ETHTOOL_GLINK = 0x8946, 0x0000000A
IFF_UP = 0x1
DOOMED = 0x5646414B       # IFLA_GROUP of links about to go ("VFAK"): deleted in one request
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Link:
    """What the namespace should show of one simulated netdev (a snapshot, immutable)."""
    name: str
    mac: str
    mtu: int
    txqlen: int
    up: bool
    carrier: bool
    addresses: tuple
    routes: tuple


def desired(m) -> dict[int, Link]:
    """ifindex -> Link for every netdev of the machine (lo is the namespace's own)."""
    return {nd.ifindex: Link(nd.name, nd.mac, nd.mtu, nd.tx_queue_len, nd.running, nd.carrier,
                             nd.addresses, nd.routes) for nd in m.netdevs.values()}


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


class NetNamespace:
    """The program's namespace as the worker threads change it. apply() calls are made one
    at a time (NetMirror's task); the state here is what was applied."""

    def __init__(self, pid: int):
        self.fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.taps: dict[int, int] = {}        # ifindex -> the tap's file
        self.links: dict[int, Link] = {}      # ifindex -> as applied
        self.routed: dict[int, tuple] = {}    # ifindex -> routes installed (the kernel drops them at down)
        self.rtnl: rtnl.Rtnl | None = None
        self.inet: socket.socket | None = None   # for SIOCETHTOOL, in the namespace
        self.events: rtnl.LinkEvents | None = None   # what the links became (the program changes them too)
        self._glink = ctypes.create_string_buffer(8)   # struct ethtool_value the ioctl points to

    @staticmethod
    def same_as_ours(pid: int) -> bool:
        """The program runs in the daemon's own namespace (--host-net, or no namespace)."""
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino

    def close(self) -> None:
        """The namespace lives on while the program does; its links die with it (persistent
        taps: closing their files leaves them, and the namespace's end unregisters them all
        at once; 512 closed in 0.1 s, where deleting them first took 0.3 s)."""
        for fd in self.taps.values():
            os.close(fd)
        self.taps.clear()
        if self.rtnl is not None:
            self.rtnl.close()
            self.rtnl = None
        if self.inet is not None:
            self.inet.close()
            self.inet = None
        if self.events is not None:
            self.events.close()
            self.events = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def apply(self, want: dict[int, Link]) -> None:
        """Make the namespace show want, in a worker thread: into the namespace and back."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self.fd)
            try:
                self._apply(want)
                self.events.read()            # what our own requests did: known
            finally:
                try:
                    _setns(own)
                except OSError:            # a thread of ours left in the program's namespace: never
                    log.critical("cannot leave a program's network namespace", exc_info=True)
                    os.abort()
        finally:
            os.close(own)

    def observe(self) -> list[tuple[int, bool | None, int | None]]:
        """What the program did to the links since the last update or observation: (ifindex,
        up, mtu), None where unchanged. Between updates only (no apply() running). The state
        here follows, so the next update sets back what the model refuses; a link the program
        took down lost its routes (and its IPv6 addresses), which the next `up` puts back."""
        out = []
        for i, (flags, mtu) in self.events.read().items():
            h = self.links.get(i)
            if h is None:
                continue
            up = bool(flags & IFF_UP)
            went_down = h.up and not up
            new_mtu = mtu if mtu is not None and mtu != h.mtu else None
            if went_down or new_mtu is not None or (up and not h.up):
                out.append((i, up if up != h.up else None, new_mtu))
            if went_down:
                self.routed.pop(i, None)
            # a link the program brings up stays "down" here: the update that follows makes
            # the model's `up` with its addresses and routes
            self.links[i] = _replace(h, up=h.up and up, mtu=h.mtu if new_mtu is None else new_mtu)
        return out

    def _request(self, msgs: list, what: str, create: bool = False, quiet=()) -> list[int]:
        errs = self.rtnl.request(msgs, create)
        for (kind, _), e in zip(msgs, errs):
            if e and e not in quiet:
                log.warning("network namespace: %s (rtnetlink %d): %s", what, kind, os.strerror(e))
        return errs

    def _apply(self, want: dict[int, Link]) -> None:
        if self.rtnl is None:
            self.rtnl = rtnl.Rtnl()
            self.inet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.events = rtnl.LinkEvents()
        have = self.links
        gone = [i for i in self.taps if i not in want]
        if gone:
            # one DELLINK for all (closing 2048 VFs' taps a link at a time took 8 s: an RCU
            # grace period each)
            self._request([rtnl.setlink(i, group=DOOMED) for i in gone], "mark to delete")
            self._request([rtnl.dellink_group(DOOMED)], "delete", quiet=(errno.ENODEV,))
            for i in gone:
                os.close(self.taps.pop(i))
                have.pop(i, None)
                self.routed.pop(i, None)
        renamed = [i for i in want if i in have and want[i].name != have[i].name]
        if renamed:         # a link's name changes only while it is down (dev_change_name: EBUSY)
            self._request([rtnl.setlink(i, up=False) for i in renamed], "down to rename")
            self._request([rtnl.setlink(i, name=want[i].name) for i in renamed], "rename")
            for i in renamed:
                have[i] = _replace(have[i], name=want[i].name, up=False)
                self.routed.pop(i, None)
        for i in want:
            if i not in have and i not in self.taps:   # (made by an update that then failed: set it up again)
                self._create(i, want[i])
        sets = []
        for i, w in want.items():
            if i not in self.taps:
                continue
            h = have.get(i)
            kw = {}
            if h is None or h.mac != w.mac:
                kw["mac"] = w.mac
            if h is None or h.mtu != w.mtu:
                kw["mtu"] = w.mtu
            if h is None or h.txqlen != w.txqlen:
                kw["txqlen"] = w.txqlen
            if h is None or h.up != w.up:
                kw["up"] = w.up
            if h is None and w.up and w.carrier:
                # a tap made with its carrier on has had no carrier event: its operstate is
                # UNKNOWN where a NIC's is UP (a carrier off/on per link cost 0.4 ms more)
                kw["oper_up"] = True
            if kw:
                sets.append((i, kw))
        if sets:
            self._request([rtnl.setlink(i, **kw) for i, kw in sets], "set link")
        for i, w in want.items():
            if i not in self.taps:
                continue
            h = have.get(i)
            if h.carrier != w.carrier if h is not None else not w.carrier:
                self._carrier(i, w.name, w.carrier)
        self._addresses(want, have)
        self._routes(want, have)
        for i, w in want.items():
            if i in self.taps:
                have[i] = w

    def _create(self, ifindex: int, w: Link) -> None:
        """A persistent tap named and numbered as the netdev (it is made down, carrier on)."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFINDEX, struct.pack("I", ifindex))
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", w.name.encode(), IFF_TAP | IFF_NO_PI))
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        except OSError as e:     # EBUSY: the program took the ifindex or the name for a link of its own
            os.close(fd)
            log.warning("network namespace: cannot make %s (ifindex %d): %s", w.name, ifindex, e.strerror)
            return
        self.taps[ifindex] = fd

    def _carrier(self, ifindex: int, name: str, on: bool) -> None:
        """netif_carrier_on/off, and the operstate (RUNNING, NO-CARRIER in `ip link`) at once:
        linkwatch applies a carrier change up to a second later (linkwatch_fire_event's rate
        limit), unless someone asks for the link (ethtool_op_get_link: linkwatch_sync_dev)."""
        fcntl.ioctl(self.taps[ifindex], TUNSETCARRIER, struct.pack("i", int(on)))
        struct.pack_into("II", self._glink, 0, ETHTOOL_GLINK, 0)
        fcntl.ioctl(self.inet, SIOCETHTOOL, struct.pack("16sP16x", name.encode(), ctypes.addressof(self._glink)))

    def _addresses(self, want: dict[int, Link], have: dict[int, Link]) -> None:
        """A new link's addresses; a link that comes up gets them again (IPv6 ones go at
        down, addrconf_ifdown); EEXIST for an address still there is no error."""
        add, drop = [], []
        for i, w in want.items():
            h = have.get(i)
            if i not in self.taps:
                continue
            if h is None or (w.up and not h.up):
                add += [(i, a) for a in w.addresses]
            elif h.addresses != w.addresses:
                add += [(i, a) for a in w.addresses if a not in h.addresses]
                drop += [(i, a) for a in h.addresses if a not in w.addresses]
        if drop:
            self._request([rtnl.addr(rtnl.RTM_DELADDR, i, a) for i, a in drop], "delete address",
                          quiet=(errno.EADDRNOTAVAIL,))
        if add:
            self._request([rtnl.addr(rtnl.RTM_NEWADDR, i, a) for i, a in add], "add address", create=True,
                          quiet=(errno.EEXIST,))

    def _routes(self, want: dict[int, Link], have: dict[int, Link]) -> None:
        """The routes of the links that are up (a link going down loses its routes, as the
        kernel's fib_disable_ip does; coming up, a network manager puts them back), after the
        addresses whose connected routes their gateways need."""
        add, drop = [], []
        for i, w in want.items():
            if i not in self.taps:
                continue
            on = self.routed.get(i, ())
            if not w.up:
                self.routed.pop(i, None)       # gone with the link's down
                continue
            add += [(i, r) for r in w.routes if r not in on]
            drop += [(i, r) for r in on if r not in w.routes]
            self.routed[i] = w.routes
        if drop:
            self._request([rtnl.route(rtnl.RTM_DELROUTE, i, r) for i, r in drop], "delete route",
                          quiet=(errno.ESRCH,))
        if add:
            self._request([rtnl.route(rtnl.RTM_NEWROUTE, i, r) for i, r in add], "add route", create=True)


def _replace(link: Link, **kw) -> Link:
    d = {k: getattr(link, k) for k in Link.__slots__}
    d.update(kw)
    return Link(**d)

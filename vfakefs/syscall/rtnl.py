"""Just enough rtnetlink (NETLINK_ROUTE, <linux/rtnetlink.h>) to configure the links,
addresses and routes of `vfakefs run`'s network namespace: messages built with struct,
sent many to a datagram, every one acknowledged (NLM_F_ACK), the errors collected.

Written here rather than taking pyroute2: a dozen message layouts, and the daemon's
dependencies stay what they are. iproute2's `ip -batch` through nsenter would cost a
process per update and parse text on the way back."""
from __future__ import annotations

import errno
import ipaddress
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_GROUP = 1, 3, 4, 13, 16, 27
IF_OPER_UP = 6
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 1, 4, 5, 6
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 0x1
_HDR = struct.Struct("=IHHII")          # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")    # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
# requests per datagram: each answer queued for us costs its skb's truesize (~1 KiB) of our
# receive buffer, and a datagram's answers must all fit in it (ENOBUFS otherwise: 700 did)
BATCH = 64
RCVBUF = 1 << 20
TIMEOUT = 30          # seconds for the kernel's answers: a lost one fails the update, never hangs a write


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n & 3)


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=I", v))


def _family(addr) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def setlink(ifindex: int, *, name: str | None = None, mac: str | None = None, mtu: int | None = None,
            txqlen: int | None = None, up: bool | None = None, group: int | None = None,
            oper_up: bool = False) -> tuple[int, bytes]:
    """RTM_NEWLINK on an existing link (no NLM_F_CREATE): what is given changes. oper_up:
    IFLA_OPERSTATE IF_OPER_UP, which the kernel takes from UNKNOWN only (set_operstate)."""
    flags, change = (IFF_UP if up else 0, IFF_UP) if up is not None else (0, 0)
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, flags, change)
    if name is not None:
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
    if mac is not None:
        body += _attr(IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    if mtu is not None:
        body += _u32(IFLA_MTU, mtu)
    if txqlen is not None:
        body += _u32(IFLA_TXQLEN, txqlen)
    if group is not None:
        body += _u32(IFLA_GROUP, group)
    if oper_up:
        body += _attr(IFLA_OPERSTATE, bytes([IF_OPER_UP]))
    return RTM_NEWLINK, body


def dellink_group(group: int) -> tuple[int, bytes]:
    """RTM_DELLINK of every link in a group (rtnl_group_dellink): one unregister_netdevice_many,
    one RCU grace period for all of them, where a link at a time waits for one each."""
    return RTM_DELLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _u32(IFLA_GROUP, group)


def addr(kind: int, ifindex: int, text: str) -> tuple[int, bytes]:
    """RTM_NEWADDR/RTM_DELADDR of "192.168.1.10/24" (IPv4: local and address alike, and the
    network's broadcast address, as network managers set them (`ip addr add ... brd +`);
    IPv6 without duplicate address detection, usable at once)."""
    iface = ipaddress.ip_interface(text)
    a = iface.ip.packed
    body = _IFADDR.pack(_family(iface), iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex)
    if iface.version == 4:
        body += _attr(IFA_LOCAL, a) + _attr(IFA_ADDRESS, a)
        if iface.network.prefixlen < 31:        # /31 and /32 have none (RFC 3021)
            body += _attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
    else:
        body += _attr(IFA_ADDRESS, a) + _u32(IFA_FLAGS, IFA_F_NODAD)
    return kind, body


def route(kind: int, ifindex: int, r) -> tuple[int, bytes]:
    """RTM_NEWROUTE/RTM_DELROUTE of a model Route (net.Route) on the link, in the main
    table, proto static (a network manager's), scope link without a gateway."""
    gw = ipaddress.ip_address(r.via) if r.via else None
    net = None if r.dest == "default" else ipaddress.ip_network(r.dest)
    fam = socket.AF_INET6 if (r.family == 6) else socket.AF_INET
    scope = RT_SCOPE_UNIVERSE if gw is not None or fam == socket.AF_INET6 else RT_SCOPE_LINK
    body = _RTMSG.pack(fam, net.prefixlen if net else 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
    if net is not None:
        body += _attr(RTA_DST, net.network_address.packed)
    if gw is not None:
        body += _attr(RTA_GATEWAY, gw.packed)
    if r.metric is not None:
        body += _u32(RTA_PRIORITY, r.metric)
    body += _u32(RTA_OIF, ifindex)
    return kind, body


class Rtnl:
    """A NETLINK_ROUTE socket: it belongs to the network namespace of the thread that
    opened it, and may be used from any thread afterwards."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, 0))
        self.sock.settimeout(TIMEOUT)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msgs: list[tuple[int, bytes]], create: bool = False) -> list[int]:
        """Send each (type, body) with NLM_F_ACK (and NLM_F_CREATE|NLM_F_EXCL when create);
        their errnos, in order (0: done)."""
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
        out: list[int] = []
        i = 0
        while i < len(msgs):
            buf, first = bytearray(), self.seq + 1
            for _ in range(min(BATCH, len(msgs) - i)):
                kind, body = msgs[i]
                self.seq += 1
                buf += _HDR.pack(16 + len(body), kind, flags, self.seq, 0) + body
                i += 1
            self.sock.send(buf)
            out += self._acks(first, self.seq)
        return out

    def _acks(self, first: int, last: int) -> list[int]:
        got: dict[int, int] = {}
        while len(got) < last - first + 1:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                n, kind, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if n < 16:
                    break
                if kind == NLMSG_ERROR and first <= seq <= last:
                    got[seq] = -struct.unpack_from("=i", data, off + 16)[0]
                off += (n + 3) & ~3
        return [got[s] for s in range(first, last + 1)]


def strerror(e: int) -> str:
    return errno.errorcode.get(e, str(e))


RTMGRP_LINK = 0x1


class LinkEvents:
    """The RTM_NEWLINK notifications of a namespace (RTMGRP_LINK): what its links became,
    whoever changed them. Opened in the namespace, like Rtnl; never blocks."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                                  NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> dict[int, tuple[int, int | None]]:
        """ifindex -> (ifi_flags, IFLA_MTU) of each link's latest notification since the last
        read (those that overflowed the buffer are lost: ENOBUFS)."""
        out: dict[int, tuple[int, int | None]] = {}
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                continue
            off = 0
            while off + 16 + _IFINFO.size <= len(data):
                n, kind, _flags, _seq, _pid = _HDR.unpack_from(data, off)
                if n < 16:
                    break
                if kind == RTM_NEWLINK:
                    _fam, _type, index, flags, _change = _IFINFO.unpack_from(data, off + 16)
                    out[index] = (flags, _mtu(data, off + 16 + _IFINFO.size, off + n))
                off += (n + 3) & ~3


def _mtu(data: bytes, off: int, end: int) -> int | None:
    while off + 4 <= end:
        alen, kind = struct.unpack_from("=HH", data, off)
        if alen < 4:
            break
        if kind == IFLA_MTU and alen >= 8:
            return struct.unpack_from("=I", data, off + 4)[0]
        off += (alen + 3) & ~3
    return None

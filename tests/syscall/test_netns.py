"""syscall/netns.py's NetNamespace against the real kernel, without a daemon: a network
namespace of a child process (`unshare -n sleep`) made to show a list of links, and
what `ip` in it then says. Updates that the model does not make today (a rename, an
address or route changed) are covered here."""
from __future__ import annotations

import subprocess
import time

import pytest

from vfakefs.model.net import Route
from vfakefs.syscall.netns import Link, NetNamespace


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def ns():
    p = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    deadline = time.monotonic() + 30        # until the child has its namespace (unshare then exec)
    while NetNamespace.same_as_ours(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    n = NetNamespace(p.pid)
    n.pid = p.pid
    try:
        yield n
    finally:
        n.close()
        p.kill()
        p.wait()


def ip(n, *args) -> str:
    r = run(["nsenter", "-t", str(n.pid), "-n", "ip", "-o", *args])
    assert r.returncode == 0, r.stderr
    return r.stdout


def link(name="eth0", mac="02:00:00:00:00:01", mtu=1500, up=True, carrier=True, addresses=(), routes=()):
    return Link(name, mac, mtu, 1000, up, carrier, tuple(addresses), tuple(routes))


def test_links_are_made_numbered_renamed_and_removed(ns):
    host = run(["ip", "-o", "link"]).stdout
    ns.apply({7: link(), 9: link("eth1", "02:00:00:00:00:02", 9000, up=False)})
    out = ip(ns, "link")
    assert "7: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500" in out and "state UP" in out
    assert "link/ether 02:00:00:00:00:01 " in out
    assert "9: eth1: <BROADCAST,MULTICAST> mtu 9000" in out
    ns.apply({7: link("ens7"), 9: link("eth1", "02:00:00:00:00:03", 9000)})
    out = ip(ns, "link")
    assert "7: ens7: <BROADCAST,MULTICAST,UP,LOWER_UP>" in out and "eth0" not in out
    assert "9: eth1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 9000" in out and "02:00:00:00:00:03" in out
    ns.apply({9: link("eth1", "02:00:00:00:00:03", 9000)})
    assert "ens7" not in ip(ns, "link") and 7 not in ns.taps
    assert run(["ip", "-o", "link"]).stdout == host          # nothing of it in the host's namespace


def test_addresses_and_routes_follow_and_come_back_after_down(ns):
    r1, r2 = Route("default", "192.168.1.1"), Route("10.0.0.0/8", "192.168.1.254", 100)
    ns.apply({2: link(addresses=["192.168.1.10/24", "fd00::10/64"], routes=[r1, r2])})
    assert [ln.split() for ln in ip(ns, "route").splitlines()] == [
        "default via 192.168.1.1 dev eth0 proto static".split(),
        "10.0.0.0/8 via 192.168.1.254 dev eth0 proto static metric 100".split(),
        "192.168.1.0/24 dev eth0 proto kernel scope link src 192.168.1.10".split()]
    assert "inet6 fd00::10/64" in ip(ns, "addr", "show", "eth0")
    ns.apply({2: link(addresses=["192.168.1.10/24", "fd00::10/64"], routes=[r1, r2, Route("default", "fe80::1"),
                                                                            Route("fd01::/64", "fd00::1", 7)])})
    six = ip(ns, "-6", "route")
    assert "default via fe80::1 dev eth0 proto static" in six and "fd01::/64 via fd00::1 dev eth0 proto static metric 7" in six
    ns.apply({2: link(up=False, addresses=["192.168.1.10/24", "fd00::10/64"], routes=[r1, r2])})
    assert ip(ns, "route") == ""                               # the kernel drops them at down
    ns.apply({2: link(addresses=["192.168.1.10/24", "fd00::10/64"], routes=[r1])})
    assert len(ip(ns, "route").splitlines()) == 2 and "10.0.0.0/8" not in ip(ns, "route")
    assert "inet6 fd00::10/64" in ip(ns, "addr", "show", "eth0")      # IPv6 went at down: back
    ns.apply({2: link(addresses=["192.168.2.10/24"], routes=[Route("default", "192.168.2.1")])})
    assert [ln.split()[:3] for ln in ip(ns, "route").splitlines()] == [["default", "via", "192.168.2.1"],
                                                                        ["192.168.2.0/24", "dev", "eth0"]]


def test_carrier_shows_at_once(ns):
    ns.apply({2: link(carrier=False)})
    assert "<NO-CARRIER,BROADCAST,MULTICAST,UP>" in ip(ns, "link") and "state DOWN" in ip(ns, "link")
    for carrier in (True, False, True, False):          # faster than linkwatch's one event a second
        ns.apply({2: link(carrier=carrier)})
        assert ("NO-CARRIER" in ip(ns, "link")) is not carrier


def test_a_link_the_program_took_is_skipped_and_the_rest_made(ns):
    """The program made a link with the ifindex the machine's netdev has: the kernel's
    EBUSY, logged; the others are made."""
    r = run(["nsenter", "-t", str(ns.pid), "-n", "ip", "link", "add", "mine", "index", "5", "type", "bridge"])
    assert r.returncode == 0, r.stderr
    ns.apply({5: link(), 6: link("eth1", "02:00:00:00:00:02")})
    out = ip(ns, "link")
    assert "5: mine:" in out and "6: eth1:" in out and "eth0" not in out and set(ns.taps) == {6}


def test_observe_sees_the_programs_changes_and_not_ours(ns):
    r1 = Route("default", "192.168.1.1")
    ns.apply({2: link(addresses=["192.168.1.10/24"], routes=[r1]), 3: link("eth1", "02:00:00:00:00:02")})
    assert ns.observe() == []                                  # our own requests' notifications: dropped
    ns.apply({2: link(mtu=9000, addresses=["192.168.1.10/24"], routes=[r1]), 3: link("eth1", "02:00:00:00:00:02")})
    assert ns.observe() == []
    sh = ["nsenter", "-t", str(ns.pid), "-n", "sh", "-c"]
    assert run(sh + ["ip link set eth0 down && ip link set eth1 mtu 4000"]).returncode == 0
    assert sorted(ns.observe()) == [(2, False, None), (3, None, 4000)]
    assert ns.observe() == []
    # the machine took eth0 down too and refused eth1's MTU: the next update sets it back, and eth0 stays
    # down; brought up by the program, then by the machine, eth0 gets its routes again
    ns.apply({2: link(mtu=9000, up=False, addresses=["192.168.1.10/24"], routes=[r1]),
              3: link("eth1", "02:00:00:00:00:02")})
    assert "mtu 1500" in ip(ns, "link", "show", "eth1") and ip(ns, "route") == ""
    assert run(sh + ["ip link set eth0 up"]).returncode == 0
    assert ns.observe() == [(2, True, None)]
    ns.apply({2: link(mtu=9000, addresses=["192.168.1.10/24"], routes=[r1]), 3: link("eth1", "02:00:00:00:00:02")})
    assert "default via 192.168.1.1 dev eth0" in ip(ns, "route")

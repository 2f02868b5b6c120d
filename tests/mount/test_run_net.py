"""`vfakefs run`'s network namespace (syscall/netns.py): iproute2's `ip` inside sees the
simulated machine's interfaces (names, MACs, the ifindex of /sys/class/net/*/ifindex,
MTU, up, carrier) and its addresses and routes, never the host's; they follow the
machine (VFs with sriov_numvfs, unbind/bind, the carrier control) before the write that
changed them returns; dpdk-devbind.py's active-interface check sees the simulated
routes; --host-net keeps the host's network; the host's interfaces never change."""
from __future__ import annotations

import os
import re
import sys
import time
from importlib import resources

import pytest

from tests.clients import client
from tests.conftest import REPO, daemon_pid, run

LINK = re.compile(r"^(\d+): ([^:]+): <([^>]*)> mtu (\d+) .* state (\S+) .*?link/(\S+) (\S+)")
# the preset without its own [net.eth2] (this file's NET replaces it)
SEED = re.sub(r"^\[net\.eth2\]\n(?:[^\[\n].*\n)*", "",
              (resources.files("vfakefs.presets") / "seed-vtd.toml").read_text(), flags=re.M)
NET = """
[net.eth2]
addresses = ["192.168.1.10/24"]
routes = ["default via 192.168.1.1", "10.0.0.0/8 via 192.168.1.254 metric 100"]
"""
# what the namespace's interfaces should show: the simulated /sys/class/net, read inside
SYSFS_NET = "grep '' /sys/class/net/*/ifindex /sys/class/net/*/address /sys/class/net/*/mtu"


def in_run(mnt, script: str, *opts):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), *opts, "--", "bash", "-c", script], cwd=REPO)


def links(text: str) -> dict[str, tuple]:
    """`ip -o link` lines -> name: (ifindex, flags, mtu, state, mac)."""
    out = {}
    for line in text.splitlines():
        m = LINK.match(line)
        if m:
            out[m[2]] = (int(m[1]), set(m[3].split(",")), int(m[4]), m[5], m[7])
    return out


def sysfs_net(text: str) -> dict[str, tuple]:
    """SYSFS_NET's output -> name: (ifindex, address, mtu)."""
    attrs: dict[str, dict] = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        _, _, _, _, name, attr = path.split("/")
        attrs.setdefault(name, {})[attr] = value
    return {n: (int(a["ifindex"]), a["address"], int(a["mtu"])) for n, a in attrs.items()}


def sections(text: str) -> list[str]:
    return text.split("---\n")


def host_links() -> str:
    r = run(["ip", "-o", "link"])
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def net_mnt(mount_preset, tmp_path):
    """seed-vtd whose eth2 has two routes besides its connected one."""
    topo = tmp_path / "seed-net.toml"
    topo.write_text(SEED + NET)
    return mount_preset(str(topo)).path


def test_ip_link_shows_the_simulated_nics_with_their_sysfs_identity(seed_mnt):
    before = host_links()
    r = in_run(seed_mnt.path, f"ip -o link; echo ---; {SYSFS_NET}")
    assert r.returncode == 0, r.stderr
    ip, sysfs = sections(r.stdout)
    got = links(ip)
    want = sysfs_net(sysfs)
    assert set(got) == set(want) == {"lo", "eth0", "eth1", "eth2", "eth3"}      # no eth0@ifN: no veth peer
    for name, (idx, flags, mtu, state, mac) in got.items():
        assert (idx, mac, mtu) == want[name], name
        assert {"UP", "LOWER_UP"} <= flags and "NO-CARRIER" not in flags
        assert state == ("UNKNOWN" if name == "lo" else "UP")
    assert got["lo"][0] == 1 and got["eth0"][4] == "a0:36:9f:51:0e:c8"
    # the host's links stay where they were, and none of them is inside
    assert host_links() == before
    assert not {mac for *_, mac in links(before).values()} - {"00:00:00:00:00:00"} & \
        {mac for *_, mac in got.values()}


def test_routes_are_the_simulated_machines_and_dpdk_devbind_sees_them(net_mnt):
    host_routes = run(["ip", "-o", "route"]).stdout
    r = in_run(net_mnt, "ip -o route; echo ---; ip -o -4 addr show eth2; echo ---; "
                        f"{client('dpdk-devbind.py')} --status-dev net")
    assert r.returncode == 0, r.stderr
    routes, addrs, status = sections(r.stdout)
    assert [ln.split() for ln in routes.splitlines()] == [
        "default via 192.168.1.1 dev eth2 proto static".split(),
        "10.0.0.0/8 via 192.168.1.254 dev eth2 proto static metric 100".split(),
        "192.168.1.0/24 dev eth2 proto kernel scope link src 192.168.1.10".split()]
    assert not set(routes.splitlines()) & set(host_routes.splitlines())
    assert "inet 192.168.1.10/24 brd 192.168.1.255 scope global eth2" in addrs
    active = {ln.split()[0] for ln in status.splitlines() if ln.endswith("*Active*")}
    assert active == {"0000:02:00.0"}                              # eth2, the one with routes
    assert "if=eth0 drv=ixgbe" in status


def test_dpdk_devbind_refuses_an_active_interface_without_force(net_mnt):
    dev = net_mnt / "sys/bus/pci/devices/0000:02:00.0"
    devbind = client("dpdk-devbind.py")
    r = in_run(net_mnt, f"{devbind} -b vfio-pci 0000:02:00.0")
    assert "routing table indicates that interface 0000:02:00.0 is active. Not modifying" in r.stdout + r.stderr
    assert os.readlink(dev / "driver").endswith("/igb")
    # with --force it goes to vfio-pci: eth2 unregisters, and with it its link, address and routes
    r = in_run(net_mnt, f"{devbind} --force -b vfio-pci 0000:02:00.0; echo ---; ip -o link; echo ---; ip -o route")
    _, ip, routes = sections(r.stdout)
    assert os.readlink(dev / "driver").endswith("/vfio-pci"), r.stderr
    assert set(links(ip)) == {"lo", "eth0", "eth1", "eth3"} and routes == ""
    r = in_run(net_mnt, f"{devbind} --status-dev net")
    assert "*Active*" not in r.stdout


def test_vf_netdevs_appear_with_sriov_numvfs_and_vanish_with_unbind_and_zero(mount_preset):
    mnt = mount_preset("seed-vtd").path
    before = host_links()
    numvfs = "/sys/class/net/eth0/device/sriov_numvfs"
    # each write returns once the namespace shows what it did, as the kernel's (register_netdev
    # in the write's probe): ip, right after it, needs no waiting
    r = in_run(mnt, f"echo 4 > {numvfs} && ip -o link; echo ---; {SYSFS_NET}; echo ---; "
                    "vf=$(basename $(readlink /sys/class/net/eth0/device/virtfn1)); "
                    "echo $vf > /sys/bus/pci/drivers/ixgbevf/unbind && ip -o link; echo ---; "
                    "echo $vf > /sys/bus/pci/drivers/ixgbevf/bind && ip -o link; echo ---; "
                    f"echo 0 > {numvfs} && ip -o link")
    assert r.returncode == 0, r.stderr
    four, sysfs, unbound, bound, zero = sections(r.stdout)
    want = {name: v[:2] for name, v in sysfs_net(sysfs).items()}
    assert len(want) == 9                          # lo, eth0-eth3, four VFs
    assert {n: (v[0], v[4]) for n, v in links(four).items()} == want
    vfs = sorted(set(want) - {"lo", "eth0", "eth1", "eth2", "eth3"})
    assert len(vfs) == 4
    assert len(links(unbound)) == 8 and set(links(bound)) == set(want)   # the VF's netdev came back
    assert set(links(zero)) == {"lo", "eth0", "eth1", "eth2", "eth3"}
    assert host_links() == before


def test_carrier_mtu_and_flags_follow_the_machine(mount_preset):
    mnt = mount_preset("seed-vtd").path
    ctl = "/sys/kernel/debug/vfakefs/carrier"
    r = in_run(mnt, f"echo 'eth1 0' > {ctl} && ip -o link show eth1; cat /sys/class/net/eth1/carrier "
                    "/sys/class/net/eth1/operstate; echo ---; "
                    f"echo 'eth1 1' > {ctl} && ip -o link show eth1; echo ---; "
                    "echo 9000 > /sys/class/net/eth1/mtu && ip -o link show eth1; echo ---; "
                    "echo 0x1002 > /sys/class/net/eth1/flags && ip -o link show eth1; echo ---; "
                    "echo 0x1003 > /sys/class/net/eth1/flags && ip -o link show eth1")
    assert r.returncode == 0, r.stderr
    off, on, mtu, down, up = (links(s)["eth1"] for s in sections(r.stdout))
    assert "NO-CARRIER" in off[1] and "LOWER_UP" not in off[1] and off[3] == "DOWN"
    assert r.stdout.split("---\n")[0].splitlines()[1:] == ["0", "down"]       # the simulated sysfs agrees
    assert "LOWER_UP" in on[1] and "NO-CARRIER" not in on[1] and on[3] == "UP"
    assert mtu[2] == 9000
    assert "UP" not in down[1] and down[3] == "DOWN"
    assert "UP" in up[1] and up[3] == "UP" and up[2] == 9000
    # a bad request changes nothing, inside or out
    r = in_run(mnt, f"echo 'eth1 2' > {ctl}; echo rc=$?; ip -o link show eth1")
    assert "rc=1" in r.stdout and "Invalid argument" in r.stderr and "LOWER_UP" in r.stdout


def test_the_programs_own_link_changes_reach_the_machine(net_mnt):
    """`ip link set` inside changes the simulated netdev as the kernel's dev_change_flags and
    dev_set_mtu would: /sys/class/net says so at the next open; an MTU the driver refuses is
    set back (the namespace's tap took it: its range is not ixgbe's)."""
    cls = "/sys/class/net"
    r = in_run(net_mnt, f"ip link set eth1 down && cat {cls}/eth1/operstate {cls}/eth1/flags; echo ---; "
                        f"ip link set eth1 up && cat {cls}/eth1/operstate {cls}/eth1/flags; echo ---; "
                        f"ip link set eth1 mtu 9000 && cat {cls}/eth1/mtu; echo ---; "
                        f"ip link set eth1 mtu 9711; cat {cls}/eth1/mtu; ip -o link show eth1; echo ---; "
                        f"ip link set eth2 down && cat {cls}/eth2/operstate; ip -o route; echo ---; "
                        f"ip link set eth2 up && cat {cls}/eth2/operstate; ip -o route")
    assert r.returncode == 0, r.stderr
    down, up, mtu, refused, eth2_down, eth2_up = sections(r.stdout)
    assert down.split() == ["down", "0x1002"] and up.split() == ["up", "0x1003"]
    assert mtu.split() == ["9000"]
    assert refused.splitlines()[0] == "9000" and links(refused)["eth1"][2] == 9000     # ixgbe's max is 9710
    assert eth2_down.split() == ["down"]                     # and its routes went with it (the kernel's)
    assert eth2_up.splitlines()[0] == "up" and len(eth2_up.splitlines()) == 4   # back, as a network manager does
    assert (net_mnt / "sys/class/net/eth1/mtu").read_text() == "9000\n"


def test_a_carrier_pulled_before_the_program_starts_shows_at_once(mount_preset):
    mnt = mount_preset("seed-vtd").path
    (mnt / "sys/kernel/debug/vfakefs/carrier").write_text("eth0 0")
    r = in_run(mnt, "ip -o link show eth0")
    assert "NO-CARRIER" in links(r.stdout)["eth0"][1] and links(r.stdout)["eth0"][3] == "DOWN"


def test_host_net_keeps_the_hosts_interfaces(seed_mnt):
    host = links(host_links())
    r = in_run(seed_mnt.path, "ip -o link", "--host-net")
    assert r.returncode == 0, r.stderr
    assert {n: v[4] for n, v in links(r.stdout).items()} == {n: v[4] for n, v in host.items()}
    r = run([sys.executable, "-m", "vfakefs", "shell", "--host-net", "--mnt", str(seed_mnt.path)],
            input="ip -o link\n", cwd=REPO)
    assert {n: v[4] for n, v in links(r.stdout).items()} == {n: v[4] for n, v in host.items()}


def test_the_namespace_goes_with_the_program(mount_preset):
    """The daemon holds a tap per interface and the namespace while the program runs,
    nothing of them after it (and no file more after a second program than after the first)."""
    mnt = mount_preset("seed-vtd").path
    pid = daemon_pid(mnt)

    def held() -> list[str]:
        out = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except FileNotFoundError:
                pass
        return out

    def after_the_program() -> list[str]:
        deadline = time.monotonic() + 30          # the daemon hears of the program's end a moment after it
        while time.monotonic() < deadline:
            now = held()
            if not [f for f in now if f == "/dev/net/tun" or f.startswith("net:")]:
                return now
            time.sleep(0.01)
        raise AssertionError(f"still held: {held()}")

    script = f"ls -l /proc/{pid}/fd | grep -c /dev/net/tun; echo 4 > /sys/class/net/eth0/device/sriov_numvfs"
    r = in_run(mnt, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4"]                 # eth0-eth3
    first = len(after_the_program())
    r = in_run(mnt, f"ls -l /proc/{pid}/fd | grep -c /dev/net/tun")      # the 4 VFs' too
    assert r.stdout.split() == ["8"]
    assert len(after_the_program()) == first


BIG = REPO / "tests/mount/topologies/one-pf-2048-vfs.toml"     # shared with bench/netns_vfs.py


def test_2048_vf_netdevs_come_and_go(mount_preset):
    """Thousands of links in one update (the kernel's answers to them once overflowed the
    netlink socket: ENOBUFS, and the links stayed half made)."""
    mnt = mount_preset(str(BIG)).path
    numvfs = "/sys/class/net/eth0/device/sriov_numvfs"
    # (their ifindex files only: reading 6000 files of the mount takes half a minute here)
    r = in_run(mnt, f"echo 2048 > {numvfs} && ip -o link; echo ---; grep '' /sys/class/net/*/ifindex; echo ---; "
                    f"echo 0 > {numvfs} && ip -o link")
    assert r.returncode == 0, r.stderr
    many, sysfs, zero = sections(r.stdout)
    want = {ln.split("/")[4]: int(ln.rpartition(":")[2]) for ln in sysfs.splitlines()}
    got = links(many)
    assert len(want) == 2050 and {n: v[0] for n, v in got.items()} == want
    assert all(v[3] == "UP" for n, v in got.items() if n != "lo")
    assert set(links(zero)) == {"lo", "eth0"}

"""The simulated machine's network configuration (`[net.<name>]`: addresses, routes,
carrier) and the link state (carrier) the `carrier` control changes; what `vfakefs run`
mirrors into its network namespace."""
import errno
import re
from importlib import resources

import pytest

from vfakefs.model import controls, topology
from vfakefs.model.errors import SysfsError, TopologyError
from vfakefs.model.host import Host
from vfakefs.model.net import Route, parse_route
from vfakefs.model.pci import sriov

# the preset without its own [net.eth2] (this file's NET replaces it)
SEED = re.sub(r"^\[net\.eth2\]\n(?:[^\[\n].*\n)*", "",
              (resources.files("vfakefs.presets") / "seed-vtd.toml").read_text(), flags=re.M)
NET = """
[net.eth2]
addresses = ["192.168.1.10/24", "fd00::10/64"]
routes = ["default via 192.168.1.1", "10.0.0.0/8 via 192.168.1.254 metric 100", "172.16.0.0/12",
          "default via fe80::1"]

[net.eth4]
addresses = ["10.9.0.3/16"]
carrier = false
"""


def seed(extra: str = NET):
    return topology.from_text(SEED + extra, "t.toml")


def test_an_interface_takes_its_names_configuration():
    m = seed()
    nd = m.netdevs["eth2"]
    assert nd.addresses == ("192.168.1.10/24", "fd00::10/64")
    assert nd.routes == (Route("default", "192.168.1.1"), Route("10.0.0.0/8", "192.168.1.254", 100),
                         Route("172.16.0.0/12"), Route("default", "fe80::1"))
    assert nd.carrier and nd.operstate == "up"
    assert m.netdevs["eth0"].addresses == () and m.netdevs["eth0"].routes == ()


def test_a_vf_interface_registered_later_takes_its_names_configuration():
    """eth4 is nobody's at boot (eth3 is the ConnectX-5's): the first VF netdev gets the
    name, and the table."""
    m = seed()
    assert "eth4" not in m.netdevs
    sriov.configure(m, m.netdevs["eth0"].dev, 2)
    nd = m.netdevs["eth4"]
    assert nd.dev.is_virtfn and nd.addresses == ("10.9.0.3/16",)
    assert not nd.carrier and nd.operstate == "down"      # no cable: rfc2863 IF_OPER_DOWN
    m.check()


@pytest.mark.parametrize("extra, where, words", [
    ('[net.eth0]\naddresses = ["192.168.1.10"]\n', "net.eth0.addresses", "prefix length"),
    ('[net.eth0]\naddresses = ["192.168.1.300/24"]\n', "net.eth0.addresses", "prefix length"),
    ('[net.eth0]\naddresses = "192.168.1.10/24"\n', "net.eth0.addresses", "not a list"),
    ('[net.eth0]\naddresses = ["192.168.1.10/24"]\nroutes = ["default via 192.168.2.1"]\n', "net.eth0.routes",
     "not on a network of eth0's addresses"),
    ('[net.eth0]\nroutes = ["10.0.0.1/8"]\n', "net.eth0.routes", "host bits"),
    ('[net.eth0]\nroutes = ["default dev eth0"]\n', "net.eth0.routes", "expected `via"),
    ('[net.eth0]\naddresses = ["10.0.0.1/8"]\nroutes = ["default via 10.0.0.2 metric x"]\n', "net.eth0.routes",
     "metric"),
    ('[net.eth0]\ncarrier = 1\n', "net.eth0.carrier", "true or false"),
    ('[net.eth0]\nspeed = 9000\n', "net.eth0.speed", "unknown key"),
    ('[net.eth0]\nmtu = 67\n', "net.eth0.mtu", "not an MTU"),
    ('[net.eth0]\nmtu = "9000"\n', "net.eth0.mtu", "not an MTU"),
    ('[net.lo]\n', "net.lo", "the kernel's own"),
    ('[net."eth:0"]\n', "net.eth:0", "not an interface name"),
    ('[net.averyveryverylongname]\n', "net.averyveryverylongname", "not an interface name"),
])
def test_a_bad_net_table_is_one_error_naming_the_field(extra, where, words):
    with pytest.raises(TopologyError) as e:
        seed(extra)
    assert f"t.toml: {where}: " in str(e.value) and words in str(e.value)


def test_net_must_be_a_table():
    with pytest.raises(TopologyError, match="t.toml: net: 1 is not a table"):
        topology.from_text("net = 1\n" + SEED, "t.toml")


def test_parse_route_words():
    assert parse_route("default via fe80::1") == Route("default", "fe80::1")
    assert parse_route("fd00::/64 metric 7") == Route("fd00::/64", None, 7)
    for bad in ("", "default via", "default via 1.2.3.4 via 1.2.3.5", "fd00::/64 via 10.0.0.1",
                "default via 1.2.3.4 metric \u00b2", "default via 1.2.3.4 metric 4294967296", "default proto static"):
        with pytest.raises(ValueError):
            parse_route(bad)


def test_carrier_control_pulls_and_plugs_the_cable_and_tells_the_watchers():
    host = Host(seed(""))
    m = host.machine
    told = []
    host.subscribe_net(told.append)
    nd = m.netdevs["eth0"]
    controls.carrier_command(m, "eth0 0\n")
    assert (nd.carrier, nd.operstate, told) == (False, "down", [nd])
    controls.carrier_command(m, "eth0 0")                  # no change: nobody told
    assert told == [nd]
    assert "eth0 0\n" in controls.carrier_show(m) and "eth1 1\n" in controls.carrier_show(m)
    controls.carrier_command(m, "eth0 1")
    assert (nd.carrier, nd.operstate, told) == (True, "up", [nd, nd])


@pytest.mark.parametrize("text, err", [("eth0", errno.EINVAL), ("eth0 2", errno.EINVAL), ("eth0 1 x", errno.EINVAL),
                                       ("nosuch 1", errno.ENODEV), ("", errno.EINVAL)])
def test_carrier_control_rejects_bad_requests_and_changes_nothing(text, err):
    m = seed("")
    before = controls.carrier_show(m)
    with pytest.raises(SysfsError) as e:
        controls.carrier_command(m, text)
    assert e.value.errno == err and controls.carrier_show(m) == before
    assert m.kmsg.records[-1].text.startswith("vfakefs: carrier: ")


def test_mtu_and_flags_changes_tell_the_watchers_and_a_reset_keeps_them():
    host = Host(seed(""))
    told = []
    host.subscribe_net(told.append)
    nd = host.machine.netdevs["eth0"]
    nd.set_mtu(9000)
    nd.set_mtu(9000)                                       # the same again: no change
    with pytest.raises(SysfsError):
        nd.set_mtu(1 << 20)
    assert told == [nd]
    nd.set_flags(nd.flags & ~1, None)
    assert told == [nd, nd]
    host.reset()
    nd2 = host.machine.netdevs["eth0"]
    nd2.set_mtu(2000)
    assert told[-1] is nd2
    host.unsubscribe_net(told.append)
    nd2.set_mtu(3000)
    assert len(told) == 3

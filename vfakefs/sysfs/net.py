"""Network interfaces: /sys/class/net and the net/ directory under a device (net/core/net-sysfs.c)."""
from __future__ import annotations

import errno

from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Attr, AttrGroup, Dir, Link, rel
from vfakefs.sysfs.parse import kstrtoul
from vfakefs.sysfs.pci_sysfs import kobj_uevent, uevent_store


def _netdev_store(setter):
    """netdev_store(): kstrtoul, whose errno (ERANGE included) passes through, then the
    change, under rtnl."""
    def store(nd, text: str) -> None:
        setter(nd, kstrtoul(text))
    return store


def _c_hex(v: int) -> str:
    return "%#x\n" % v if v else "0\n"      # C's %#x prints 0 as "0"


def carrier_show(nd) -> str:
    if not nd.running:
        raise SysfsError(errno.EINVAL)          # carrier_show: only while the device is up
    return "%d\n" % nd.carrier


def _log(nd, text: str) -> None:
    # netdev_info(): "<driver> <bus id> <ifname>: ..."
    dev = nd.dev
    if dev is None or dev.machine is None:
        return
    drv = dev.driver.name if dev.driver is not None else "pci"
    dev.machine.kmsg.log(f"{drv} {dev.name} {nd.name}: {text}")


NETDEV = AttrGroup((
    Attr("addr_assign_type", lambda nd: "0\n"),
    Attr("addr_len", lambda nd: "6\n"),
    Attr("address", lambda nd: nd.mac + "\n"),
    Attr("broadcast", lambda nd: "ff:ff:ff:ff:ff:ff\n"),
    Attr("carrier", carrier_show, _netdev_store(lambda nd, v: nd.set_carrier(v)), 0o644),
    Attr("dev_id", lambda nd: "0x0\n"),
    Attr("dev_port", lambda nd: "0\n"),
    Attr("flags", lambda nd: _c_hex(nd.flags), _netdev_store(lambda nd, v: nd.set_flags(v, _log)), 0o644),
    Attr("ifindex", lambda nd: "%d\n" % nd.ifindex),
    Attr("iflink", lambda nd: "%d\n" % nd.ifindex),
    Attr("mtu", lambda nd: "%d\n" % nd.mtu, _netdev_store(lambda nd, v: nd.set_mtu(v)), 0o644),
    Attr("operstate", lambda nd: nd.operstate + "\n"),
    Attr("tx_queue_len", lambda nd: "%u\n" % nd.tx_queue_len,
         _netdev_store(lambda nd, v: nd.set_tx_queue_len(v)), 0o644),
    Attr("type", lambda nd: "%d\n" % nd.arp_type),
    Attr("uevent", lambda nd: f"INTERFACE={nd.name}\nIFINDEX={nd.ifindex}\n", uevent_store, 0o644),
))


def netdev_entries(v, nd) -> dict:
    here = v.netdev_path(nd)
    out = NETDEV.entries(nd)
    parent = f"{v.device_path(nd.dev)}/{nd.subdir}" if nd.subdir else v.device_path(nd.dev)
    out["device"] = Link(rel(here, parent))
    out["subsystem"] = Link(rel(here, "class/net"))
    out["power"] = Dir({})
    out["statistics"] = Dir({n: Attr(n, lambda o: "0\n").bind(nd) for n in
                             ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", "tx_bytes", "tx_packets",
                              "tx_errors", "tx_dropped")})
    return out


def net_subdir(v, dev, subdir) -> dict:
    return {nd.name: Dir(lambda nd=nd: netdev_entries(v, nd)) for nd in dev.netdevs if nd.subdir == subdir}


def virtio_dir(v, dev, subdir: str) -> dict:
    """virtio-pci registers a virtio device (virtioN) and the netdev hangs below it."""
    here = f"{v.device_path(dev)}/{subdir}"
    return {"net": Dir(lambda: net_subdir(v, dev, subdir)), "driver": Link(rel(here, "bus/virtio/drivers/virtio_net")),
            "subsystem": Link(rel(here, "bus/virtio")), "power": Dir({}),
            "uevent": kobj_uevent(v.m, here, "virtio", virtio_env(dev))}


def virtio_env(dev) -> tuple:
    """dev_uevent's DRIVER, then virtio_uevent's modalias: virtio-pci's device id (a modern
    function's PCI device id - 0x1040, a legacy one's subsystem id) and vendor (the
    function's subsystem vendor)."""
    vid = dev.device - 0x1040 if dev.device >= 0x1040 else dev.subsystem_device
    return (("DRIVER", "virtio_net"), ("MODALIAS", "virtio:d%08Xv%08X" % (vid, dev.subsystem_vendor)))


def class_net_entries(v) -> dict:
    out = {name: Link(rel("class/net", v.netdev_path(nd))) for name, nd in v.m.netdevs.items()}
    out["lo"] = Link(rel("class/net", "devices/virtual/net/lo"))
    return dict(sorted(out.items()))

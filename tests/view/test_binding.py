"""Driver binding through the view's stores (no mount): bind, unbind, new_id,
remove_id, driver_override, drivers_probe, drivers_autoprobe.

Each case is one test; every failed write must leave the machine as it was
(`expect_error` compares a snapshot taken before and after). The helpers here
are shared with test_sriov.py, test_group_type.py and test_properties.py.
"""
from __future__ import annotations

import errno
import posixpath

import pytest

from vfakefs.model.base.drivers import ANY, PciDeviceId
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Bound, Dir, Link
from vfakefs.sysfs.tree import View


# --- walking the view ------------------------------------------------------------------------
def resolve(view: View, path: str, follow: bool = True):
    """The node at path (relative to the mount root), following symlinks on the way
    (and at the end too, unless follow=False)."""
    parts = [p for p in path.strip("/").split("/") if p]
    node, here = view.root(), []
    for i, part in enumerate(parts):
        assert isinstance(node, Dir), f"{path}: {'/'.join(here)} is not a directory"
        entries = node.entries()
        if part not in entries:
            raise FileNotFoundError(f"{path}: no {part} in {'/'.join(here)}")
        child = entries[part]
        if isinstance(child, Link) and (follow or i < len(parts) - 1):
            target = posixpath.normpath(posixpath.join("/".join(here), child.target))
            return resolve(view, "/".join([target] + parts[i + 1:]))
        node = child
        here.append(part)
    return node


def exists(view: View, path: str) -> bool:
    try:
        resolve(view, path, follow=False)
    except FileNotFoundError:
        return False
    return True


def show(view: View, path: str) -> str:
    node = resolve(view, path)
    assert isinstance(node, Bound) and node.decl.show is not None, path
    return node.decl.show(node.obj)


def store(view: View, path: str, text: str) -> None:
    node = resolve(view, path)
    assert isinstance(node, Bound) and node.decl.store is not None, path
    node.decl.store(node.obj, text)


def entries(view: View, path: str) -> dict:
    node = resolve(view, path)
    assert isinstance(node, Dir), path
    return node.entries()


def tree(view: View, path: str) -> dict[str, str | None]:
    """Every path below `path` (links not followed): {path: link target, '' for files, None for dirs}."""
    out: dict[str, str | None] = {}

    def rec(node, prefix):
        for name, child in node.entries().items():
            p = f"{prefix}/{name}"
            if isinstance(child, Dir):
                out[p] = None
                rec(child, p)
            else:
                out[p] = child.target if isinstance(child, Link) else ""
    rec(resolve(view, path), path)
    return out


def dev(bdf: str) -> str:
    """A device's directory, through the /sys/bus/pci/devices link."""
    return f"sys/bus/pci/devices/{bdf}"


def drv(name: str) -> str:
    return f"sys/bus/pci/drivers/{name}"


def gtype(gid: int) -> str:
    return f"sys/kernel/iommu_groups/{gid}/type"


# --- the snapshot a failed write must leave unchanged --------------------------------------------
def snapshot(view: View, paths: bool = True) -> dict:
    """The machine's state, and with paths=True the view's paths below the roots a write
    can change."""
    m = view.m
    state = {
        "functions": {f.name: (f.driver.name if f.driver else None, f.driver_override,
                               f.group.id if f.group else None, tuple(nd.name for nd in f.netdevs),
                               f.sriov.num_vfs if f.sriov else None,
                               f.sriov.drivers_autoprobe if f.sriov else None)
                      for f in m.functions},
        "dynids": {name: list(d.dynids) for name, d in m.drivers.items()},
        "bound": {name: [f.name for f in d.devices] for name, d in m.drivers.items()},
        "group_types": {gid: g.default_domain for gid, g in m.groups.by_id.items()} if m.groups else None,
        "netdevs": sorted(m.netdevs),
        "autoprobe": m.drivers_autoprobe,
        "vfio_enable_sriov": m.vfio_enable_sriov,
    }
    if paths:
        state["paths"] = {root: tree(view, root) for root in
                          ("sys/bus/pci/devices", "sys/kernel/iommu_groups", "sys/class/net", "sys/bus/pci/drivers")
                          if exists(view, root)}
    return state


def expect_error(view: View, path: str, text: str, err: int) -> None:
    """The write fails with err and changes nothing."""
    before = snapshot(view)
    with pytest.raises(SysfsError) as e:
        store(view, path, text)
    assert e.value.errno == err, f"{path} <- {text!r}: {errno.errorcode.get(e.value.errno)}, " \
                                 f"want {errno.errorcode[err]}"
    view.m.check()
    assert snapshot(view) == before, f"{path} <- {text!r} failed but changed the machine"


def ok(view: View, path: str, text: str) -> None:
    store(view, path, text)
    view.m.check()


def driver_of(view: View, bdf: str) -> str | None:
    """What the view says: the `driver` link's last component."""
    e = entries(view, dev(bdf))
    return e["driver"].target.rsplit("/", 1)[1] if "driver" in e else None


def log_lines(m) -> list[str]:
    return [r.text for r in m.kmsg.records]



# --- bind ------------------------------------------------------------------------------------
def test_bind_no_such_device_is_enodev(seed):
    expect_error(seed, f"{drv('ixgbe')}/bind", "0000:99:00.0\n", errno.ENODEV)


def test_bind_short_name_is_enodev(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.0")
    expect_error(seed, f"{drv('ixgbe')}/bind", "03:00.0\n", errno.ENODEV)
    expect_error(seed, f"{drv('ixgbe')}/bind", "03:00.0", errno.ENODEV)


def test_bind_without_a_match_is_enodev(seed):
    assert driver_of(seed, "0000:00:1f.4") is None
    expect_error(seed, f"{drv('ixgbe')}/bind", "0000:00:1f.4\n", errno.ENODEV)


def test_bind_not_matching_a_bound_device_is_enodev_not_ebusy(seed):
    expect_error(seed, f"{drv('igb')}/bind", "0000:03:00.0\n", errno.ENODEV)


def test_bind_already_bound_to_the_same_driver_is_ebusy(seed):
    expect_error(seed, f"{drv('ixgbe')}/bind", "0000:03:00.0\n", errno.EBUSY)


def test_bind_already_bound_to_another_matching_driver_is_ebusy(seed):
    ok(seed, f"{drv('igb')}/new_id", "8086 1528")          # igb now matches the X540 too
    assert driver_of(seed, "0000:03:00.0") == "ixgbe"       # new_id takes only unbound devices
    expect_error(seed, f"{drv('igb')}/bind", "0000:03:00.0\n", errno.EBUSY)


def test_bind_vfio_pci_to_a_bound_device_with_override_is_ebusy(seed):
    ok(seed, f"{dev('0000:03:00.0')}/driver_override", "vfio-pci\n")
    expect_error(seed, f"{drv('vfio-pci')}/bind", "0000:03:00.0\n", errno.EBUSY)


def test_bind_vfio_pci_to_a_bridge_is_einval(seed):
    ok(seed, f"{drv('pcieport')}/unbind", "0000:00:1d.4\n")
    ok(seed, f"{dev('0000:00:1d.4')}/driver_override", "vfio-pci\n")
    expect_error(seed, f"{drv('vfio-pci')}/bind", "0000:00:1d.4\n", errno.EINVAL)
    assert driver_of(seed, "0000:00:1d.4") is None


def test_bind_vfio_pci_to_a_pf_with_vfs_is_ebusy(qemu):
    pf = "0000:01:00.0"
    ok(qemu, f"{dev(pf)}/sriov_numvfs", "2\n")
    ok(qemu, f"{drv('nvme')}/unbind", pf + "\n")             # nvme leaves SR-IOV enabled
    assert show(qemu, f"{dev(pf)}/sriov_numvfs") == "2\n"
    ok(qemu, f"{dev(pf)}/driver_override", "vfio-pci\n")
    expect_error(qemu, f"{drv('vfio-pci')}/bind", pf + "\n", errno.EBUSY)
    assert any("Cannot bind to PF with SR-IOV enabled" in line for line in log_lines(qemu.m))


@pytest.mark.parametrize("text", ["0000:02:00.0\n", "0000:02:00.0"])
def test_bind_succeeds_with_and_without_newline(seed, text):
    ok(seed, f"{drv('igb')}/unbind", "0000:02:00.0\n")
    assert "eth2" not in seed.m.netdevs
    ok(seed, f"{drv('igb')}/bind", text)
    assert driver_of(seed, "0000:02:00.0") == "igb"
    assert "0000:02:00.0" in entries(seed, drv("igb"))
    assert "DRIVER=igb\n" in show(seed, f"{dev('0000:02:00.0')}/uevent")
    assert [nd.dev.name for nd in seed.m.netdevs.values() if nd.dev.name == "0000:02:00.0"]


# --- unbind ----------------------------------------------------------------------------------------
def test_unbind_from_another_driver_is_enodev(seed):
    expect_error(seed, f"{drv('igb')}/unbind", "0000:03:00.0\n", errno.ENODEV)


def test_unbind_unbound_device_is_enodev(seed):
    expect_error(seed, f"{drv('ixgbe')}/unbind", "0000:00:1f.4\n", errno.ENODEV)


def test_unbind_no_such_device_is_enodev(seed):
    expect_error(seed, f"{drv('ixgbe')}/unbind", "0000:99:00.0\n", errno.ENODEV)


def test_unbind_short_name_is_enodev(seed):
    expect_error(seed, f"{drv('ixgbe')}/unbind", "03:00.1\n", errno.ENODEV)


def test_unbind_detaches_link_netdev_and_uevent(seed):
    assert driver_of(seed, "0000:03:00.1") == "ixgbe" and "eth1" in entries(seed, "sys/class/net")
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    assert driver_of(seed, "0000:03:00.1") is None
    assert "0000:03:00.1" not in entries(seed, drv("ixgbe"))
    assert "0000:03:00.0" in entries(seed, drv("ixgbe"))
    assert "eth1" not in entries(seed, "sys/class/net")
    assert "net" not in entries(seed, dev("0000:03:00.1"))
    assert "DRIVER=" not in show(seed, f"{dev('0000:03:00.1')}/uevent")


# --- new_id ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["8086\n", "8086", "\n", "xyz\n", "xyz 1528\n"])
def test_new_id_needs_two_hex_fields(seed, text):
    expect_error(seed, f"{drv('ixgbe')}/new_id", text, errno.EINVAL)


def test_new_id_already_in_the_static_table_is_eexist(seed):
    expect_error(seed, f"{drv('ixgbe')}/new_id", "8086 1528\n", errno.EEXIST)
    expect_error(seed, f"{drv('ixgbe')}/new_id", "8086 1528 8086 0001\n", errno.EEXIST)


def test_new_id_driver_data_not_in_the_table_is_einval(seed):
    expect_error(seed, f"{drv('vfio-pci')}/new_id", "8086 1528 ffffffff ffffffff 0 0 5\n", errno.EINVAL)


def test_new_id_seven_fields_skip_the_static_table_check(seed):
    ok(seed, f"{drv('ixgbe')}/new_id", "8086 1528 ffffffff ffffffff 0 0 0\n")
    assert seed.m.drivers["ixgbe"].dynids == [PciDeviceId(0x8086, 0x1528)]


def test_new_id_duplicate_dynamic_id_is_eexist_on_6_12(seed):
    ok(seed, f"{drv('vfio-pci')}/new_id", "1234 5678\n")
    expect_error(seed, f"{drv('vfio-pci')}/new_id", "1234 5678\n", errno.EEXIST)
    assert seed.m.drivers["vfio-pci"].dynids == [PciDeviceId(0x1234, 0x5678)]


def test_new_id_duplicate_dynamic_id_is_accepted_on_6_1(qemu):
    # seven fields: neither kernel checks these against the ids the driver already has
    for _ in range(2):
        ok(qemu, f"{drv('vfio-pci')}/new_id", "1234 5678 ffffffff ffffffff 0 0 0\n")
    assert qemu.m.drivers["vfio-pci"].dynids == [PciDeviceId(0x1234, 0x5678)] * 2


def test_new_id_duplicate_short_dynamic_id_is_eexist_on_6_1_too(qemu):
    # new_id_store has checked fewer-than-7-field ids with pci_match_device() (dynamic ids
    # included) since 3853f9123c18 "PCI: Avoid duplicate IDs in driver dynamic IDs list" (v3.12)
    ok(qemu, f"{drv('vfio-pci')}/new_id", "1234 5678\n")
    expect_error(qemu, f"{drv('vfio-pci')}/new_id", "1234 5678\n", errno.EEXIST)


def test_new_id_duplicate_seven_field_id_is_accepted_on_6_12(seed):
    # the duplicate check runs only when fields != 7
    for _ in range(2):
        ok(seed, f"{drv('vfio-pci')}/new_id", "1234 5678 ffffffff ffffffff 0 0 0\n")


def test_new_id_covered_by_a_wildcard_dynamic_id_is_eexist_on_6_12(seed):
    # the check matches a made-up device: PCI_ANY_ID in the stored id is a wildcard
    ok(seed, f"{drv('vfio-pci')}/new_id", "1234 5678\n")
    expect_error(seed, f"{drv('vfio-pci')}/new_id", "1234 5678 8086 0001\n", errno.EEXIST)


def test_new_id_binds_matching_unbound_devices_only(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    ok(seed, f"{drv('vfio-pci')}/new_id", "8086 1528\n")
    assert driver_of(seed, "0000:03:00.1") == "vfio-pci"
    assert driver_of(seed, "0000:03:00.0") == "ixgbe"
    assert seed.m.drivers["vfio-pci"].dynids == [PciDeviceId(0x8086, 0x1528, ANY, ANY, 0, 0, 0)]


def test_new_id_on_pci_stub_accepts_any_driver_data_and_binds(seed):
    ok(seed, f"{drv('igb')}/unbind", "0000:02:00.0\n")
    ok(seed, f"{drv('pci-stub')}/new_id", "8086 1533 ffffffff ffffffff 0 0 7\n")
    assert driver_of(seed, "0000:02:00.0") == "pci-stub"


def test_new_id_binds_even_with_drivers_autoprobe_off(seed):
    ok(seed, "sys/bus/pci/drivers_autoprobe", "0\n")
    ok(seed, f"{drv('igb')}/unbind", "0000:02:00.0\n")
    ok(seed, f"{drv('pci-stub')}/new_id", "8086 1533\n")
    assert driver_of(seed, "0000:02:00.0") == "pci-stub"


# --- remove_id ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["8086\n", "\n", "xyz\n"])
def test_remove_id_needs_two_fields(seed, text):
    ok(seed, f"{drv('vfio-pci')}/new_id", "8086 1528\n")
    expect_error(seed, f"{drv('vfio-pci')}/remove_id", text, errno.EINVAL)


def test_remove_id_of_a_static_id_is_enodev(seed):
    expect_error(seed, f"{drv('ixgbe')}/remove_id", "8086 1528\n", errno.ENODEV)


def test_remove_id_of_an_unknown_id_is_enodev(seed):
    ok(seed, f"{drv('vfio-pci')}/new_id", "8086 1528\n")
    expect_error(seed, f"{drv('vfio-pci')}/remove_id", "8086 1529\n", errno.ENODEV)
    expect_error(seed, f"{drv('vfio-pci')}/remove_id", "8086 1528 1234 0001\n", errno.ENODEV)


def test_remove_id_deletes_the_id_but_never_unbinds(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    ok(seed, f"{drv('vfio-pci')}/new_id", "8086 1528\n")
    assert driver_of(seed, "0000:03:00.1") == "vfio-pci"
    ok(seed, f"{drv('vfio-pci')}/remove_id", "8086 1528\n")
    assert seed.m.drivers["vfio-pci"].dynids == []
    assert driver_of(seed, "0000:03:00.1") == "vfio-pci"
    expect_error(seed, f"{drv('vfio-pci')}/remove_id", "8086 1528\n", errno.ENODEV)


# --- driver_override ---------------------------------------------------------------------------------
def test_driver_override_set_and_clear(seed):
    p = f"{dev('0000:03:00.0')}/driver_override"
    assert show(seed, p) == "(null)\n"
    ok(seed, p, "vfio-pci\n")
    assert show(seed, p) == "vfio-pci\n"
    assert driver_of(seed, "0000:03:00.0") == "ixgbe"      # writing neither unbinds nor probes
    ok(seed, p, "\n")
    assert show(seed, p) == "(null)\n"
    ok(seed, p, "pci-stub")
    assert show(seed, p) == "pci-stub\n"
    ok(seed, p, "\0")
    assert show(seed, p) == "(null)\n"


def test_driver_override_names_are_not_checked(seed):
    p = f"{dev('0000:03:00.0')}/driver_override"
    ok(seed, p, "no-such-driver\nrest")
    assert show(seed, p) == "no-such-driver\n"


def test_driver_override_too_long_is_einval(seed):
    expect_error(seed, f"{dev('0000:03:00.0')}/driver_override", "x" * 4095, errno.EINVAL)


def test_driver_override_blocks_other_drivers(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    ok(seed, f"{dev('0000:03:00.1')}/driver_override", "vfio-pci\n")
    expect_error(seed, f"{drv('ixgbe')}/bind", "0000:03:00.1\n", errno.ENODEV)


def test_driver_override_binds_vfio_pci_through_drivers_probe(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    ok(seed, f"{dev('0000:03:00.1')}/driver_override", "vfio-pci\n")
    ok(seed, "sys/bus/pci/drivers_probe", "0000:03:00.1\n")
    assert driver_of(seed, "0000:03:00.1") == "vfio-pci"
    assert "0000:03:00.1" in entries(seed, drv("vfio-pci"))
    assert "eth1" not in seed.m.netdevs


def test_vfio_pci_never_binds_without_override_or_id(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    expect_error(seed, f"{drv('vfio-pci')}/bind", "0000:03:00.1\n", errno.ENODEV)


# --- drivers_probe and drivers_autoprobe ---------------------------------------------------------------
def test_drivers_probe_unknown_device_is_enodev(seed):
    expect_error(seed, "sys/bus/pci/drivers_probe", "0000:99:00.0\n", errno.ENODEV)
    expect_error(seed, "sys/bus/pci/drivers_probe", "03:00.0\n", errno.ENODEV)


def test_drivers_probe_of_a_bound_device_succeeds_and_changes_nothing(seed):
    before = snapshot(seed)
    ok(seed, "sys/bus/pci/drivers_probe", "0000:03:00.0\n")
    assert snapshot(seed) == before


def test_drivers_probe_of_a_device_nobody_wants_succeeds(seed):
    before = snapshot(seed)
    ok(seed, "sys/bus/pci/drivers_probe", "0000:00:1f.4\n")
    assert snapshot(seed) == before


def test_drivers_probe_rebinds_an_unbound_device(seed):
    ok(seed, f"{drv('ixgbe')}/unbind", "0000:03:00.1\n")
    ok(seed, "sys/bus/pci/drivers_probe", "0000:03:00.1")
    assert driver_of(seed, "0000:03:00.1") == "ixgbe"


@pytest.mark.parametrize("text, value", [("0\n", 0), ("0", 0), ("0junk", 0), ("1\n", 1), ("junk\n", 1),
                                         ("\n", 1), ("", 1), ("00", 0), (" 0", 1)])
def test_drivers_autoprobe_first_character_decides_and_never_fails(seed, text, value):
    p = "sys/bus/pci/drivers_autoprobe"
    ok(seed, p, "0" if value else "1")
    ok(seed, p, text)
    assert show(seed, p) == f"{value}\n"
    assert seed.m.drivers_autoprobe == value

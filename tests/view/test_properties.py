"""Random sequences of sysfs writes, valid and invalid, on seed-vtd (6.12) and
qemu-ref (6.1). After every step the machine and its view must agree with
each other, and a write that failed must have changed nothing."""
from __future__ import annotations

import errno
import posixpath
import re
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.view.test_binding import dev, drv, gtype, snapshot, store
from vfakefs.model.base import binding
from vfakefs.model import topology
from vfakefs.model.errors import SysfsError
from vfakefs.sysfs.nodes import Dir, Link
from vfakefs.sysfs.tree import View

JUNK_NAMES = ["0000:99:00.0", "03:00.0", "01:00.0", "", "xyz", "0000:03:00.0 ", "0000:0a:00.0\n"]
JUNK_IDS = ["", "\n", "xyz", "8086", "8086 zz", "1234 5678", "1234 5678 ffffffff ffffffff 0 0 0",
            "1234 5678 ffffffff ffffffff 0 0 5", "0x8086 0x1528"]
GROUP_TYPES = ["identity", "DMA", "DMA-FQ", "auto", "dma", "blocked", "", "identity\n", "DMA-FQ\n", "auto\n"]
BOOLS = ["0", "1", "y", "n", "on", "off", "x", "", "\n", "0\n", "1\n"]
NUMBERS = ["0", "1", "2", "3", "0x2", "+1", "02", " 2", "-1", "abc", "65536", "\n", "2\n\n"]
WRITES = ["bind", "unbind", "new_id", "remove_id", "driver_override", "drivers_probe", "drivers_autoprobe",
          "sriov_numvfs", "sriov_drivers_autoprobe", "group_type", "remove", "rescan", "enable_sriov"]


_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def named(path: str, target: str | None = None) -> set[str]:
    """The device names a path or link target mentions (0000:00:1c.0:pcie001 names 0000:00:1c.0)."""
    out = set()
    for part in path.split("/") + (target or "").split("/"):
        mt = _BDF.match(part)
        if mt and (mt.end() == len(part) or part[mt.end()] == ":"):
            out.add(mt.group())
    return out


class SysfsWrites(RuleBasedStateMachine):
    preset = ""

    def __init__(self):
        super().__init__()
        self.v = View(topology.load(self.preset))
        self.m = self.v.m
        self.seen: set[str] = {f.name for f in self.m.functions}
        # The machine as the invariant last checked it, (generation, snapshot()), or None
        # once a write succeeded. A failed write proves the machine unchanged against it,
        # and the invariant then has nothing new to check: no walk of the whole tree.
        self.checked: tuple | None = None

    # --- drawing arguments from the machine's real names plus junk ------------------------------
    def _name(self, data) -> str:
        pool = sorted({f.name for f in self.m.functions} | self.seen) + JUNK_NAMES
        return data.draw(st.sampled_from(pool)) + data.draw(st.sampled_from(["", "\n"]))

    def _driver(self, data) -> str:
        return data.draw(st.sampled_from(sorted(self.m.drivers)))

    def _function(self, data, which=lambda f: True):
        funcs = [f for f in self.m.functions if which(f)]
        return data.draw(st.sampled_from(funcs)) if funcs else None

    def _id(self, data) -> str:
        real = sorted({(f.vendor, f.device) for f in self.m.functions} | {(0x1234, 0x5678)})
        v, d = data.draw(st.sampled_from(real))
        form = data.draw(st.sampled_from(["%x %x", "%x %x ffffffff ffffffff", "%x %x ffffffff ffffffff 0 0 0",
                                          "%x %x ffffffff ffffffff 0 0 5", "junk"]))
        text = data.draw(st.sampled_from(JUNK_IDS)) if form == "junk" else form.replace("%x %x", "%x %x" % (v, d))
        return text + data.draw(st.sampled_from(["", "\n"]))

    def _write(self, data) -> tuple[str, str] | None:
        what = data.draw(st.sampled_from(WRITES), label="write")
        if what in ("bind", "unbind") and data.draw(st.booleans(), label="coherent"):
            # a device and a driver that go together: unbind from its own driver, bind an unbound one
            if what == "unbind":
                f = self._function(data, lambda f: f.driver is not None)
                return (f"{drv(f.driver.name)}/unbind", f.name + "\n") if f else None
            def fits(f):
                return sorted(d.name for d in self.m.drivers.values() if binding.match(d, f))
            f = self._function(data, lambda f: f.driver is None and fits(f))
            return (f"{drv(data.draw(st.sampled_from(fits(f))))}/bind", f.name) if f else None
        if what in ("bind", "unbind", "new_id", "remove_id"):
            text = self._id(data) if what.endswith("_id") else self._name(data)
            return f"{drv(self._driver(data))}/{what}", text
        if what == "driver_override":
            f = self._function(data)
            text = data.draw(st.sampled_from(sorted(self.m.drivers) + ["junk", "", "\0"]))
            return f"{dev(f.name)}/driver_override", text + data.draw(st.sampled_from(["", "\n"]))
        if what == "drivers_probe":
            return "sys/bus/pci/drivers_probe", self._name(data)
        if what == "drivers_autoprobe":
            return "sys/bus/pci/drivers_autoprobe", data.draw(st.sampled_from(BOOLS))
        if what in ("sriov_numvfs", "sriov_drivers_autoprobe"):
            pf = self._function(data, lambda f: f.sriov is not None)
            if pf is None:
                return None
            total = pf.sriov.total_vfs
            pool = NUMBERS + [str(total), str(total + 1)] if what == "sriov_numvfs" else BOOLS
            return f"{dev(pf.name)}/{what}", data.draw(st.sampled_from(pool))
        if what == "group_type":
            gid = data.draw(st.sampled_from(sorted(self.m.groups.by_id)))
            return gtype(gid), data.draw(st.sampled_from(GROUP_TYPES))
        if what == "remove":
            f = self._function(data, lambda f: not f.is_virtfn)
            return f"{dev(f.name)}/remove", data.draw(st.sampled_from(["1", "1\n", "0", "x"]))
        if what == "rescan":
            return "sys/bus/pci/rescan", data.draw(st.sampled_from(["1", "1\n", "0", "x"]))
        return "sys/module/vfio_pci/parameters/enable_sriov", data.draw(st.sampled_from(BOOLS))

    # --- the one rule: a write --------------------------------------------------------------------
    @rule(data=st.data())
    def write(self, data):
        step = self._write(data)
        if step is None:
            return
        path, text = step
        before = self.checked if self.checked is not None else self._state()
        kind = path.rsplit("/", 1)[1]
        try:
            store(self.v, path, text)
            event(f"{kind}: ok")
        except SysfsError as e:
            event(f"{kind}: {errno.errorcode[e.errno]}")
            # changed nothing: the machine's state, the view's paths below the roots a write can
            # change (test_binding.snapshot) and the generation every structural change bumps
            after = self._state()
            assert after == before, f"{path} <- {text!r} failed with {e.errno} but changed the machine"
            return
        self.checked = None
        self.seen |= {f.name for f in self.m.functions}

    def _state(self) -> tuple:
        return self.m.generation, snapshot(self.v)

    # --- after every step ---------------------------------------------------------------------------
    @invariant()
    def machine_invariants_hold(self):
        self.m.check()

    @invariant()
    def view_agrees_with_the_machine(self):
        m, v = self.m, self.v
        if self.checked is not None:
            # checked already: only failed writes since, each proved to change nothing
            return
        checked = self._state()
        nodes = index(v)                                    # one walk of the whole tree per change
        links = {p: n.target for p, n in nodes.items() if isinstance(n, Link)}

        kids: dict[str, set[str]] = {}
        for p in nodes:
            parent, name = p.rsplit("/", 1)
            kids.setdefault(parent, set()).add(name)

        def children(path):
            return kids.get(path, set())

        # groups: every listed group has members, every function is in exactly one
        groups_dir = "sys/kernel/iommu_groups"
        listed = children(groups_dir)
        assert listed == {str(g) for g in m.groups.by_id}
        members = []
        for gid in listed:
            devs = children(f"{groups_dir}/{gid}/devices")
            assert devs, f"group {gid} is empty"
            members += devs
        assert sorted(members) == sorted(f.name for f in m.functions), "every function in exactly one group"

        # driver links both ways, uevent, netdevs
        for d in m.drivers.values():
            linked = {n for n in children(drv(d.name)) if f"{drv(d.name)}/{n}" in links and n != "module"}
            assert linked == {f.name for f in m.functions if f.driver is d}, d.name
        for f in m.functions:
            here = "sys/" + v.device_path(f)
            assert links[f"{here}/iommu_group"].endswith(f"kernel/iommu_groups/{f.group.id}"), f.name
            assert f"sys/bus/pci/devices/{f.name}" in links
            uevent = nodes[f"{here}/uevent"]
            uevent = uevent.decl.show(uevent.obj).splitlines()
            if f.driver is None:
                assert f"{here}/driver" not in links and not any(x.startswith("DRIVER=") for x in uevent), f.name
                assert not f.netdevs, f"{f.name}: unbound but has netdevs"
            else:
                assert links[f"{here}/driver"].endswith(f"bus/pci/drivers/{f.driver.name}"), f.name
                assert uevent[0] == f"DRIVER={f.driver.name}", f.name
                assert bool(f.netdevs) == f.driver.registers_netdev(f), f"{f.name}: {f.driver.name} netdevs {f.netdevs}"
            for nd in f.netdevs:
                assert "sys/" + v.netdev_path(nd) in nodes, nd.name
        net = children("sys/class/net")
        assert net - {"lo"} == set(m.netdevs)
        for name, nd in m.netdevs.items():
            target = posixpath.normpath(posixpath.join("sys/class/net", links[f"sys/class/net/{name}"]))
            assert target == "sys/" + v.netdev_path(nd) and target in nodes, name
            assert nd.dev.driver is not None and nd.dev.driver.net

        # nothing is left of functions that went away (disabled VFs, removed devices)
        gone = self.seen - {f.name for f in m.functions}
        if gone:
            mention = re.compile("|".join(map(re.escape, sorted(gone))))   # a cheap sieve before named()
            for path in nodes:
                target = links.get(path)
                if not mention.search(path) and not (target and mention.search(target)):
                    continue
                left = named(path, target) & gone
                assert not left, f"{left} gone but {path} -> {links.get(path)} names it"
        for g in m.groups.by_id.values():
            assert not {d.name for d in g.devices} & gone
        assert not {nd.dev.name for nd in m.netdevs.values()} & gone
        # a function's directory tells a name, and its nlink, as its listing does
        for p, n in nodes.items():
            if isinstance(n, Dir) and n.find is not None:
                assert_find_agrees(n, p)
        self.checked = checked


def assert_find_agrees(d: Dir, where: str) -> None:
    """d.find(name) is d.entries()[name] or None (ask the listing), and d.subdirs() counts
    the directories among d.entries()."""
    entries = d.entries()
    assert d.subdirs() == sum(isinstance(e, Dir) for e in entries.values()), where
    for name, e in entries.items():
        got = d.find(name)
        assert got is None or got == e, f"{where}/{name}: {got} != {e}"
    assert d.find("no_such_attribute") is None


def index(view: View) -> dict:
    """{path: node} of everything below sys/ (links not followed)."""
    out = {}

    def rec(node, prefix):
        for name, child in node.entries().items():
            p = f"{prefix}/{name}"
            out[p] = child
            if isinstance(child, Dir):
                rec(child, p)
    rec(view.root().entries()["sys"], "sys")
    return out


class SeedVtdWrites(SysfsWrites):
    preset = "seed-vtd"


class QemuRefWrites(SysfsWrites):
    preset = "qemu-ref"


SETTINGS = settings(max_examples=60, stateful_step_count=20, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestSeedVtdWrites = SeedVtdWrites.TestCase
TestSeedVtdWrites.settings = SETTINGS
TestQemuRefWrites = QemuRefWrites.TestCase
TestQemuRefWrites.settings = SETTINGS


def test_named_finds_device_names_in_paths_and_targets():
    assert named("sys/devices/pci0000:00/0000:00:1c.0/0000:03:10.0") == {"0000:00:1c.0", "0000:03:10.0"}
    assert named("sys/devices/pci0000:00/0000:00:1c.0/0000:00:1c.0:pcie001") == {"0000:00:1c.0"}
    assert named("sys/class/net/eth3", "../../devices/pci0000:00/0000:00:1c.0/0000:03:10.2/net/eth3") == \
        {"0000:00:1c.0", "0000:03:10.2"}
    assert named("sys/bus/pci/slots/0000:03:10.02x") == set()

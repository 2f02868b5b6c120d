"""After a structural change the FUSE layer re-lists only the directories the view
names (sysfs/dirty.py) and keeps its caches of the rest. Checked without a mount,
against the view itself: after every change, each listing, node and attribute the
inode table still holds is what the view shows now, and every entry the kernel was
served either still stands or is queued for invalidation. (tests/mount/test_invalidation.py
checks the same through a mount and real programs.)
"""
import pyfuse3
import pytest

from vfakefs.fuse.inodes import InodeTable
from vfakefs.fuse.republish import _same
from vfakefs.model import topology
from vfakefs.model.base import binding
from vfakefs.model.base.drivers import Driver
from vfakefs.model.host import Host
from vfakefs.model.iommu.groups import IommuGroup
from vfakefs.model.net import NetDev
from vfakefs.model.pci import sriov
from vfakefs.model.pci.pci import PciFunction
from vfakefs.sysfs.nodes import Bound, Dir
from vfakefs.sysfs.tree import View

MODEL = (PciFunction, IommuGroup, Driver)


class Table:
    """An inode table over seed-vtd as the daemon wires it, and what it was told."""

    def __init__(self, preset: str = "seed-vtd"):
        self.host = Host(topology.load(preset))
        self.view = View(self.host)
        self.specs = []
        self.t = InodeTable(self.view.root(), lambda: self.host.machine.generation, self.dirty)
        self.host.subscribe(self.t.publish)

    @property
    def m(self):
        return self.host.machine

    def dirty(self):
        self.specs.append(self.view.dirty())
        return self.specs[-1]

    def walk(self) -> None:
        """What `ls -lR` makes the kernel hold: every directory read with READDIRPLUS."""
        t, stack = self.t, [pyfuse3.ROOT_INODE]
        while stack:
            for _, a in t.dir_rows(stack.pop())[2:]:
                if a.st_mode & 0o170000 == 0o040000:
                    stack.append(a.st_ino)

    def handed(self) -> dict[int, int]:
        """The nlink of every directory whose attributes the kernel holds."""
        return {ino: a.st_nlink for ino, a in self.t.attr_cache.items() if a.st_mode & 0o170000 == 0o040000}

    def applied(self) -> None:
        """The kernel took the queued invalidations."""
        self.t.pending.clear()
        self.t.pending_attrs.clear()


def fresh(view: View) -> dict[str, object]:
    """path -> node, drawn from the view with no cache in between."""
    out, stack = {"": None}, [("", view.root())]
    while stack:
        path, d = stack.pop()
        for name, node in d.entries().items():
            p = f"{path}/{name}" if path else name
            out[p] = node
            if isinstance(node, Dir):
                stack.append((p, node))
    return out


def agrees(held, now) -> bool:
    """held (a cached node) describes now: same kind, mode, target, and for an
    attribute of a model object, the very object (a re-added VF is a new one)."""
    if not _same(held, now):
        return False
    if isinstance(held, Bound) and isinstance(held.obj, MODEL):
        return held.obj is now.obj
    if isinstance(held, Bound) and isinstance(held.obj, NetDev):   # lo (no device) is drawn afresh each time
        return held.obj is now.obj if now.obj.dev is not None else held.obj.name == now.obj.name
    return True


def require(ok: bool, what: str) -> None:
    """An assertion that names what failed without pytest's repr of the model objects
    around it (a PciFunction's repr runs through the whole machine)."""
    if not ok:
        pytest.fail(what, pytrace=False)


def check(tb: Table, handed: dict[int, int] | None = None) -> None:
    """handed: the directories' nlinks the kernel held before the change."""
    t, want = tb.t, fresh(tb.view)
    children: dict[str, dict] = {}
    for p, node in want.items():
        if p:
            parent, _, name = p.rpartition("/")
            children.setdefault(parent, {})[name] = node
    for ino, entries in t.listings.items():
        path = t.paths[ino]
        now = children.get(path, {})
        require(entries.keys() == now.keys(), f"cached listing of {path}: {sorted(entries.keys() ^ now.keys())}")
        bad = [n for n in entries if not agrees(entries[n], now[n])]
        require(not bad, f"cached entries of {path}: {bad}")
    for ino, node in t.nodes.items():
        path = t.paths[ino]
        require(path == "" or (path in want and agrees(node, want[path])), f"cached node {path}")
    pending = set(t.pending)
    for dino, served in t.served.items():
        for name, node in served.items():
            path = t._join(dino, name)
            if (dino, name.encode()) not in pending:
                require(path in want and _same(node, want[path]), f"the kernel keeps a stale {path}")
    for ino, a in t.attr_cache.items():   # a directory's nlink follows its listing
        path = t.paths[ino]
        if isinstance(want.get(path), Dir):
            n = 2 + sum(isinstance(c, Dir) for c in children.get(path, {}).values())
            require(a.st_nlink == n, f"cached nlink of {path}")
    nlink = {p: 2 + sum(isinstance(c, Dir) for c in children.get(p, {}).values()) for p in children}
    for ino, rows in t.rows_cache.items():   # what READDIRPLUS hands out
        path = t.paths[ino]
        names = [r[0].decode() for r in rows[2:]]
        require(names == sorted(children.get(path, {})), f"cached rows of {path}")
        for name, a in rows[2:]:
            p = t._join(ino, name.decode())
            if p in nlink:
                require(a.st_nlink == nlink[p], f"cached rows of {path}: nlink of {name}")
    for ino, n in (handed or {}).items():   # the kernel must drop attributes that changed
        path = t.paths.get(ino)
        if path is not None and path in nlink and nlink[path] != n:
            require(ino in t.pending_attrs, f"the kernel keeps the nlink of {path}")


def _unbind(m, name):
    dev = m.lookup(name)
    binding.unbind(m, dev.driver, name)


def _bind(m, drv, name):
    binding.bind(m, m.drivers[drv], name)


def _vfio(m, name):
    m.lookup(name).driver_override = "vfio-pci"
    _bind(m, "vfio-pci", name)


def _rebind(m, name, drv=None):
    """Unbind and bind again in one notification (a driver reload): the same paths
    (net/eth1, the driver link) now stand for new objects or targets."""
    with m.batch():
        old = m.lookup(name).driver.name
        _unbind(m, name)
        if drv == "vfio-pci":
            _vfio(m, name)
        else:
            m.lookup(name).driver_override = None
            _bind(m, drv or old, name)


CHANGES = [
    ("enable 4 VFs", lambda m: sriov.configure(m, m.lookup("0000:03:00.0"), 4)),
    ("enable 2 VFs on the other PF", lambda m: sriov.configure(m, m.lookup("0000:03:00.1"), 2)),
    ("unbind a VF", lambda m: _unbind(m, "0000:03:10.0")),
    ("VF to vfio-pci", lambda m: _vfio(m, "0000:03:10.0")),
    ("disable the VFs", lambda m: sriov.configure(m, m.lookup("0000:03:00.0"), 0)),
    ("unbind the PF (its VFs go with it)", lambda m: _unbind(m, "0000:03:00.1")),
    ("PF to vfio-pci", lambda m: _vfio(m, "0000:03:00.1")),
    ("rebind the PF in one batch", lambda m: _rebind(m, "0000:03:00.0")),
    ("PF to vfio-pci in one batch", lambda m: _rebind(m, "0000:03:00.0", "vfio-pci")),
    ("unbind nvme", lambda m: _unbind(m, "0000:06:00.0")),
    ("bind nvme", lambda m: _bind(m, "nvme", "0000:06:00.0")),
    ("remove one function of a shared group", lambda m: m.remove_function(m.lookup("0000:01:00.1"))),
    ("rescan", lambda m: m.rescan()),
    ("unbind a switch port", lambda m: _unbind(m, "0000:05:00.0")),
    ("bind it again", lambda m: _bind(m, "pcieport", "0000:05:00.0")),
    ("remove a root port and what is below", lambda m: m.remove_function(m.lookup("0000:00:1d.0"))),
    ("rescan again", lambda m: m.rescan()),
    ("PF back to ixgbe", lambda m: _rebind(m, "0000:03:00.0", "ixgbe")),
    ("re-enable VFs", lambda m: sriov.configure(m, m.lookup("0000:03:00.0"), 8)),
]
# qemu-ref: ACPI firmware nodes, virtio netdevs, an e1000 on the root bus
QEMU_CHANGES = [
    ("remove a downstream port with a firmware node", lambda m: m.remove_function(m.lookup("0000:04:00.0"))),
    ("rescan", lambda m: m.rescan()),
    ("remove a root-bus NIC", lambda m: m.remove_function(m.lookup("0000:00:05.0"))),
    ("rescan", lambda m: m.rescan()),
    ("unbind virtio-pci", lambda m: _unbind(m, "0000:05:00.0")),
    ("bind virtio-pci", lambda m: _bind(m, "virtio-pci", "0000:05:00.0")),
    ("rebind e1000e in one batch", lambda m: _rebind(m, "0000:02:00.0")),
    ("remove the root port above the switch", lambda m: m.remove_function(m.lookup("0000:00:04.0"))),
    ("rescan", lambda m: m.rescan()),
]


@pytest.mark.parametrize("preset,changes", [("seed-vtd", CHANGES), ("qemu-ref", QEMU_CHANGES)])
def test_every_change_leaves_no_stale_cache_and_queues_every_stale_entry(preset, changes):
    tb = Table(preset)
    tb.walk()
    check(tb)
    for what, change in changes:
        del tb.specs[:]
        handed = tb.handed()
        change(tb.m)
        tb.m.check()
        assert tb.specs and None not in tb.specs, f"{what}: not the precise path"
        check(tb, handed)
        tb.applied()
        tb.walk()
        check(tb)


def test_a_reset_falls_back_to_relisting_everything():
    tb = Table()
    sriov.configure(tb.m, tb.m.lookup("0000:03:00.0"), 4)
    tb.walk()
    del tb.specs[:]
    tb.host.reset()
    assert tb.specs == [None]
    check(tb)


@pytest.mark.parametrize("n", [4])
def test_a_change_after_a_full_walk_relists_what_it_touches_not_what_was_seen(n):
    """Work per change follows what changed: a VF toggle re-lists the same few
    directories whether the kernel was shown the PF only or the whole tree."""
    tb = Table()
    pf = tb.m.lookup("0000:03:00.0")

    def relisted(change) -> set[str]:
        before = dict(tb.t.listings)
        change()
        return {tb.t.paths[i] for i, e in tb.t.listings.items() if before.get(i) is not e}

    sriov.configure(tb.m, pf, n)
    tb.t.listing(tb.t.ino_of("sys"))
    tb.walk()
    seen = len(tb.t.served)
    assert seen > 200
    off = relisted(lambda: sriov.configure(tb.m, pf, 0))
    on = relisted(lambda: sriov.configure(tb.m, pf, n))
    expect = {"sys/bus/pci/devices", "sys/kernel/iommu_groups", "sys/class/net", "sys/bus/pci/drivers/ixgbevf",
              "sys/devices/pci0000:00/0000:00:1c.0", "sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0",
              "sys/kernel/debug/iommu/intel", "sys/devices/virtual/iommu/dmar0/devices", "dev/vfio"}
    assert off <= expect and on <= expect


def test_listings_of_every_function_are_not_relisted_for_a_few_that_came_or_went():
    """A listing drawn from all functions or interfaces (bus/pci/devices, class/net,
    iommu_groups, the driver's links, the port's and PF's directories) where a few
    entries came or went is dropped and its stale names invalidated, not re-listed
    at the change: the change costs its own size, not the directory's."""
    tb = Table()
    pf = tb.m.lookup("0000:03:00.0")
    sriov.configure(tb.m, pf, 4)
    tb.walk()
    tb.applied()
    for n in (0, 4):
        made: list[str] = []
        listing = tb.t.listing

        def counted(ino, listing=listing):
            if ino not in tb.t.listings:
                made.append(tb.t.paths[ino])
            return listing(ino)
        tb.t.listing = counted
        try:
            sriov.configure(tb.m, pf, n)
        finally:
            del tb.t.listing
        assert set(made) <= {"dev/vfio"}, f"numvfs {n}: re-listed {sorted(made)}"
        check(tb)
        # what the kernel held of the VFs that went is queued for invalidation, nothing else
        names = {(tb.t.paths[d], name.decode()) for d, name in tb.t.pending}
        if n == 0:
            assert ("sys/bus/pci/devices", "0000:03:10.0") in names
            assert ("sys/devices/pci0000:00/0000:00:1c.0/0000:03:00.0", "virtfn0") in names
        assert not any(name == "0000:03:00.1" for _, name in names)
        # a listing of links keeps its nlink: the kernel keeps its attributes (else its next
        # path walk through it asks GETATTR, which needs the whole listing again)
        kept = {tb.t.paths[d] for d in tb.t.pending_attrs}
        assert not kept & {"sys/bus/pci/devices", "sys/class/net", "sys/bus/pci/drivers/ixgbevf"}, kept
        tb.applied()
        tb.walk()
        check(tb)


def test_a_listing_that_tells_one_name_is_mended_not_made_again():
    """bus/pci/devices tells what one name holds (Dir.entry): after VFs came or went its
    listing is mended for their names when next asked for, so a lookup in it (a writer's
    path to the next PF's sriov_numvfs) costs the change, not a new listing of every
    function; and nothing is asked while nobody looks in it."""
    tb = Table()
    tb.walk()
    tb.applied()
    bus = tb.t.inos["sys/bus/pci/devices"]
    node = tb.t.node(bus)
    made, asked = [], []
    entries, entry = node.entries, node.entry
    node.entries = lambda: made.append(1) or entries()
    node.entry = lambda name: asked.append(name) or entry(name)
    steps = (("0000:03:00.0", 4), ("0000:03:00.1", 2), ("0000:03:00.0", 0), ("0000:03:00.0", 3))
    for i, (pf, n) in enumerate(steps):
        del made[:], asked[:]
        sriov.configure(tb.m, tb.m.lookup(pf), n)
        assert not asked, "asked before anyone looked"
        if i == 1:   # nobody looked in it after this one: the next asks for both changes' names
            continue
        ino, _ = tb.t.child(bus, "0000:03:00.1")
        tb.t.attrs(ino, tb.t.node(ino))
        assert not made, f"{pf} numvfs {n}: made again"
        assert len(asked) == len(set(asked)) <= 6, asked
        check(tb)   # the mended listing is the view's
        tb.applied()
        tb.walk()
        check(tb)

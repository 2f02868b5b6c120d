"""The simulated /lib/modules/<release>/ (model/modfiles): the index writer, the .ko writer
and depmod's outputs, checked against the unmodified kmod 30 (Debian's, from .clients/):
depmod -b over our .ko files must write the very bytes we generate, and modinfo must read
our .ko files."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from tests.clients import client
from vfakefs.model.base import modules as catalogue
from vfakefs.model.base.drivers import ANY, PciDeviceId, catalogue as drivers_catalogue
from vfakefs.model.modfiles.elf import module_object, read_modinfo
from vfakefs.model.modfiles.file2alias import pci_alias
from vfakefs.model.modfiles.kindex import index_bytes, index_entries
from vfakefs.model.modfiles.tree import module_tree

REL = "6.1.0-56-amd64"
INSTALLED = ("modules.order", "modules.builtin", "modules.builtin.modinfo")   # from the build, not depmod


def _install(tree: dict[str, bytes], root: Path, rel: str = REL) -> Path:
    """What `make modules_install` leaves: the .ko files and the build's lists."""
    base = root / "lib/modules" / rel
    for path, data in tree.items():
        if path.endswith(".ko") or path in INSTALLED:
            f = base / path
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(data)
    return base


def _depmod(root: Path, rel: str = REL) -> None:
    r = subprocess.run([client("depmod"), "-b", str(root), rel], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def _compare_with_depmod(tree: dict[str, bytes], root: Path) -> None:
    base = _install(tree, root)
    _depmod(root)
    written = sorted(p.name for p in base.iterdir() if p.name.startswith("modules."))
    assert written == sorted(k for k in tree if k.startswith("modules."))
    for name in written:
        assert (base / name).read_bytes() == tree[name], name


def test_depmod_writes_the_same_files_over_our_modules(tmp_path):
    tree = module_tree(REL)
    _compare_with_depmod(tree, tmp_path)
    # and they say what the catalogue says (not just "the same as depmod", whatever that is)
    dep = index_entries(tree["modules.dep.bin"])
    (prio, line), = dep["vfio_pci"]
    assert line == ("kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko "
                    "kernel/drivers/vfio/vfio.ko kernel/virt/lib/irqbypass.ko kernel/drivers/vfio/vfio_virqfd.ko")
    aliases = index_entries(tree["modules.alias.bin"])
    assert [v for _, v in aliases["pci:v00008086d000010D3sv*sd*bc*sc*i*"]] == ["e1000e"]
    assert [v for _, v in aliases["vfio_pci:v*d*sv*sd*bc*sc*i*"]] == ["vfio_pci"]
    assert [v for _, v in aliases["pci:v*d*sv*sd*bc01sc08i02*"]] == ["nvme"]
    assert [v for _, v in aliases["crypto_crct10dif"]] == ["crct10dif_pclmul", "crct10dif_generic"]
    assert set(index_entries(tree["modules.builtin.bin"])) >= {"8250_pci", "intel_agp"}
    assert "pcieport" not in index_entries(tree["modules.builtin.bin"])   # a bool option's code


def test_equal_priorities_and_shared_keys_as_depmod_orders_them(tmp_path):
    """Built-in aliases all have priority 0: several values under one key keep depmod's
    order (a new value goes before its equals); keys that are prefixes of others split nodes."""
    mods = {m.name: m for m in catalogue.modules().values() if m.builtin}
    extra = {name: dataclasses.replace(mods[name], aliases=aliases) for name, aliases in (
        ("8250_pci", ("serial-pci", "serial", "ser-ial[a-z]")),
        ("8250_mid", ("serial-pci", "serial-pci-mid")),
        ("intel_agp", ("serial", "agp-intel", "agp")))}
    loadable = {"vfio": catalogue.modules()["vfio"]}
    tree = module_tree(REL, {**mods, **extra, **loadable}, drivers_catalogue())
    _compare_with_depmod(tree, tmp_path)
    got = index_entries(tree["modules.builtin.alias.bin"])
    assert got["serial"] == [(0, "intel_agp"), (0, "8250_pci")]
    assert got["serial_pci"] == [(0, "8250_mid"), (0, "8250_pci")]
    assert "ser_ial[a-z]" in got   # '-' turned to '_' outside brackets only


def test_index_round_trip_and_format():
    entries = [("on", "1", 5), ("once", "2", 1), ("one", "3", 9), ("ask", "4", 0), ("ate", "5", 0), ("on", "6", 5)]
    data = index_bytes(entries)
    assert data[:8] == bytes.fromhex("b007f45700020001")
    assert index_entries(data) == {"ask": [(0, "4")], "ate": [(0, "5")], "on": [(5, "6"), (5, "1")],
                                   "once": [(1, "2")], "one": [(9, "3")]}
    assert index_bytes([]) == bytes.fromhex("b007f45700020001" "0000000c")   # an empty root, no flags
    with pytest.raises(ValueError):
        index_bytes([("caf\u00e9", "x", 0)])   # depmod: "only 7-bit ASCII is supported"


def test_pci_aliases_as_file2alias_writes_them():
    assert pci_alias(PciDeviceId(0x8086, 0x10D3)) == "pci:v00008086d000010D3sv*sd*bc*sc*i*"
    assert pci_alias(PciDeviceId(ANY, ANY, class_code=0x010802, class_mask=0xFFFFFF)) == "pci:v*d*sv*sd*bc01sc08i02*"
    assert pci_alias(PciDeviceId(0x10DE, ANY, class_code=0x040300, class_mask=0xFFFF00)) == \
        "pci:v000010DEd*sv*sd*bc04sc03i*"
    assert pci_alias(PciDeviceId(0x10DE, ANY, class_code=0x030000, class_mask=0xFF0000)) == \
        "pci:v000010DEd*sv*sd*bc03sc*i*"
    assert pci_alias(PciDeviceId(0x1AF4, 0x1041, 0x1AF4, 0x1100)) == \
        "pci:v00001AF4d00001041sv00001AF4sd00001100bc*sc*i*"
    assert pci_alias(PciDeviceId(ANY, ANY, override_only=True)) == "vfio_pci:v*d*sv*sd*bc*sc*i*"
    assert pci_alias(PciDeviceId(ANY, ANY, class_code=0x010600, class_mask=0xFFFF80)) is None   # "Can't handle masks"


def _modinfo(*args) -> subprocess.CompletedProcess:
    return subprocess.run([client("modinfo"), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_modinfo_reads_our_module_files(tmp_path):
    ko = tmp_path / "x.ko"
    ko.write_bytes(module_object([("license", "GPL"), ("parm", "n:how many"), ("parmtype", "n:int"),
                                  ("name", "x"), ("vermagic", "1.2.3 SMP ")], ["x_sym"], ["y_sym"]))
    r = _modinfo(ko)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"filename:       {ko}\nlicense:        GPL\nname:           x\n"
                        "vermagic:       1.2.3 SMP \nparm:           n:how many (int)\n")
    assert read_modinfo(ko.read_bytes())[3] == ("name", "x")


def test_modinfo_of_the_catalogues_modules(tmp_path):
    tree = module_tree(REL)
    base = _install(tree, tmp_path)
    _depmod(tmp_path)
    r = _modinfo("-b", tmp_path, "-k", REL, "vfio_pci")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:11] == [
        f"filename:       {base}/kernel/drivers/vfio/pci/vfio-pci.ko",
        "license:        GPL v2",
        "description:    VFIO PCI - User Level meta-driver",
        "author:         Alex Williamson <alex.williamson@redhat.com>",
        f"srcversion:     {catalogue.srcversion(catalogue.modules()['vfio_pci'])}",
        "alias:          vfio_pci:v*d*sv*sd*bc*sc*i*",
        "depends:        vfio-pci-core,vfio",
        "retpoline:      Y",
        "intree:         Y",
        "name:           vfio_pci",
        f"vermagic:       {REL} SMP preempt mod_unload modversions "]
    assert r.stdout.splitlines()[11].startswith("parm:           ids:Initial PCI IDs to add to the vfio driver")
    assert r.stdout.count("\nparm:") == 6
    r = _modinfo("-b", tmp_path, "-k", REL, "-F", "alias", "e1000e")
    assert r.stdout == "pci:v00008086d000015B8sv*sd*bc*sc*i*\npci:v00008086d000010D3sv*sd*bc*sc*i*\n"
    r = _modinfo("-b", tmp_path, "-k", REL, "shpchp")   # built in: from modules.builtin.modinfo
    assert r.returncode == 0 and r.stdout.splitlines() == [
        "name:           shpchp", "filename:       (builtin)", "license:        GPL",
        "file:           drivers/pci/hotplug/shpchp",
        "parm:           shpchp_debug:Debugging mode enabled or not (bool)",
        "parm:           shpchp_poll_mode:Using polling mechanism for hot-plug events or not (bool)",
        "parm:           shpchp_poll_time:Polling mechanism frequency, in seconds (int)"]
    show = [client("modprobe"), "-d", str(tmp_path), "-S", REL, "--show-depends"]
    r = subprocess.run([*show, "shpchp"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, "builtin shpchp\n")
    r = subprocess.run([*show, "pcieport"], capture_output=True, text=True, timeout=60)   # no MODULE_LICENSE
    assert r.returncode == 1 and "Module pcieport not found" in r.stderr
    r = _modinfo("-b", tmp_path, "-k", REL, "no_such_module")
    assert r.returncode == 1 and "Module no_such_module not found." in r.stderr

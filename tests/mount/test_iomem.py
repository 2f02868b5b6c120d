"""MNT/proc/iomem through a real mount and, inside `vfakefs run`, /proc/iomem and an
unmodified util-linux dmesg reading the simulated /dev/kmsg: the PCI core's resource
lines and the drivers' banners as the reference kernel prints them."""
from __future__ import annotations

import os
import re
import sys

from tests.conftest import NOBODY, REPO, run

LINE = re.compile(r"^(?:  )*[0-9a-f]{8,}-[0-9a-f]{8,} : .+$")
NUMVFS = "sys/bus/pci/devices/0000:01:00.0/sriov_numvfs"


def in_run(mnt, *cmd):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *cmd], cwd=REPO)


def test_proc_iomem_root_and_unprivileged(qemu_mnt):
    path = qemu_mnt.path / "proc/iomem"
    st = os.stat(path)
    assert (oct(st.st_mode & 0o777), st.st_size) == ("0o444", 0)
    text = qemu_mnt.read(path)
    assert all(LINE.match(line) for line in text.splitlines())
    assert "  fde00000-fdffffff : PCI Bus 0000:02\n    fde00000-fde3ffff : 0000:02:00.0\n" in text
    assert "    fde40000-fde5ffff : 0000:02:00.0\n      fde40000-fde5ffff : e1000e\n" in text
    r = run(["cat", "proc/iomem"], cwd=qemu_mnt.path, user=NOBODY)     # r_show: no CAP_SYS_ADMIN
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("00000000-00000000 : ") == len(text.splitlines())
    assert "    00000000-00000000 : 0000:02:00.0\n      00000000-00000000 : e1000e\n" in r.stdout


def test_vf_bars_appear_with_sriov_numvfs_and_vanish_at_0(mount_preset):
    m = mount_preset("qemu-ref")
    r = run(["bash", "-c", f"echo 2 > {NUMVFS} && cat proc/iomem"], cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert ("    fe004000-fe013fff : 0000:01:00.0\n      fe004000-fe007fff : 0000:01:00.1\n"
            "        fe004000-fe007fff : nvme\n      fe008000-fe00bfff : 0000:01:00.2\n") in r.stdout
    r = run(["bash", "-c", f"echo 0 > {NUMVFS} && cat proc/iomem"], cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert "0000:01:00.1" not in r.stdout and "    fe004000-fe013fff : 0000:01:00.0\n" in r.stdout


def test_iomem_and_dmesg_inside_vfakefs_run(mount_preset):
    """dmesg (util-linux, unmodified) reads the simulated /dev/kmsg: the boot's resource lines,
    e1000e's banner, and what an unbind and a remove + rescan print; /proc/iomem is the
    simulated one inside and the host's outside."""
    m = mount_preset("qemu-ref")
    host = open("/proc/iomem").read()
    script = ("grep -c 'PCI Bus 0000:01' /proc/iomem; "
              "echo 0000:02:00.0 > /sys/bus/pci/drivers/e1000e/unbind; "
              "echo 1 > /sys/bus/pci/devices/0000:02:00.0/remove; echo 1 > /sys/bus/pci/rescan; dmesg")
    r = in_run(m.path, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "2"                                  # its memory and prefetchable windows
    log = [re.sub(r"^\[\s*\d+\.\d+\] ", "", line) for line in out[1:]]
    for line in ("pci_bus 0000:00: root bus resource [mem 0xc0000000-0xfebfffff window]",
                 "pci 0000:01:00.0: VF BAR 0 [mem 0x00000000-0x0000ffff 64bit]: contains BAR 0 for 4 VFs",
                 "pci 0000:00:04.0: bridge window [io  0x2000-0x4fff]: assigned",
                 "e1000e 0000:02:00.0 eth0: MAC: 3, PHY: 8, PBA No: 000000-000"):
        assert line in log, line
    tail = log[log.index("e1000e 0000:02:00.0 eth0: removed PHC"):]
    assert tail[1:4] == ["pci 0000:02:00.0: Removing from iommu group 7",
                         "pci 0000:02:00.0: [8086:10d3] type 00 class 0x020000",
                         "pci 0000:02:00.0: BAR 0 [mem 0xfde40000-0xfde5ffff]"]
    assert "pci 0000:02:00.0: ROM [mem 0xfde00000-0xfde3ffff pref]: assigned" in tail
    assert tail[-1] == "e1000e 0000:02:00.0 eth0: MAC: 3, PHY: 8, PBA No: 000000-000"
    assert open("/proc/iomem").read() == host

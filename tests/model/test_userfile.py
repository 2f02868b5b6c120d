"""Files a user names (topology, config dump, card, scenario) are read only when regular
and bounded: /dev/zero, a FIFO, a directory or a huge file is an error with a reason,
never a read that waits for ever or fills memory (the daemon was OOM-killed by
`echo "add 6 /dev/zero" > hotplug`)."""
from __future__ import annotations

import errno
import os

import pytest

from vfakefs.model import scenario, topology, userfile
from vfakefs.model.errors import TopologyError
from vfakefs.model.pci import card


@pytest.fixture
def fifo(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    return p


@pytest.fixture
def huge(tmp_path):
    p = tmp_path / "huge.toml"
    with open(p, "wb") as f:
        f.truncate(userfile.MAX_FILE + 1)      # sparse: no disk used
    return p


def test_a_regular_file_is_read_whole(tmp_path):
    p = tmp_path / "t.toml"
    p.write_bytes(b"x" * 3_000_000)
    assert userfile.read_bytes(p) == b"x" * 3_000_000


@pytest.mark.parametrize("name, err, why", [
    ("/dev/zero", errno.EINVAL, "not a regular file"),
    ("fifo", errno.EINVAL, "not a regular file"),
    ("dir", errno.EINVAL, "not a regular file"),
    ("huge", errno.EFBIG, "larger than 16 MiB"),
])
def test_anything_else_is_refused(tmp_path, fifo, huge, name, err, why):
    (tmp_path / "dir").mkdir()
    path = {"fifo": fifo, "huge": huge, "dir": tmp_path / "dir"}.get(name, name)
    with pytest.raises(OSError) as e:
        userfile.read_bytes(path)
    assert (e.value.errno, e.value.strerror) == (err, why)


def test_each_reader_refuses_dev_zero_and_a_fifo(fifo):
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(TopologyError, match="not a regular file"):
            topology.parse(path)
        with pytest.raises(card.CardError) as e:
            card.read(path)
        assert e.value.errno == errno.EINVAL and "not a regular file" in str(e.value)
        with pytest.raises(scenario.ScenarioError, match="not a regular file"):
            scenario.load(path)


def test_a_config_dump_that_is_dev_zero_is_refused(tmp_path):
    src = (tmp_path / "t.toml")
    src.write_text('[iommu]\ntype = "none"\n[[device]]\nbdf = "0000:00:00.0"\nkind = "host_bridge"\n'
                   'vendor = 0x8086\ndevice = 0x1237\nclass = 0x060000\nconfig = "/dev/zero"\n')
    with pytest.raises(TopologyError, match="not a regular file"):
        topology.parse(str(src))

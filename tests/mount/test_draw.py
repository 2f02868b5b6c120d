"""`vfakefs draw MNT -o FILE`: the DOT text read from a real mount (parsed here: each function a
node, each IOMMU group a cluster, parent -> child and PF -> VF edges), the CLI's errors, and the
rendering by Graphviz (skipped, with the reason, where `dot` is not installed)."""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field

import pytest

from tests.conftest import REPO, run, sh, vfakefs

NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\];$')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;$')
CLUSTER = re.compile(r"^\s*subgraph (cluster_\w+) \{$")


@dataclass
class Graph:
    nodes: dict[str, str] = field(default_factory=dict)            # name -> attributes
    clusters: dict[str, list[str]] = field(default_factory=dict)   # cluster -> nodes directly in it
    labels: dict[str, str] = field(default_factory=dict)           # cluster -> its label line
    parents: dict[str, str | None] = field(default_factory=dict)   # cluster -> enclosing cluster
    edges: dict[tuple[str, str], str] = field(default_factory=dict)

    def cluster_of(self, node: str) -> str:
        return next(c for c, ns in self.clusters.items() if node in ns)


def parse(text: str) -> Graph:
    g, stack = Graph(), []
    lines = text.splitlines()
    assert lines[0] == "digraph vfakefs {" and lines[-1] == "}", text
    for line in lines[1:-1]:
        if m := CLUSTER.match(line):
            g.clusters[m[1]] = []
            g.parents[m[1]] = stack[-1] if stack else None
            stack.append(m[1])
        elif line.strip() == "}":
            stack.pop()
        elif m := EDGE.match(line):
            g.edges[(m[1], m[2])] = m[3] or ""
        elif m := NODE.match(line):
            assert m[1] not in g.nodes, f"node twice: {m[1]}"
            g.nodes[m[1]] = m[2]
            if stack:
                g.clusters[stack[-1]].append(m[1])
        elif stack and line.strip().startswith("label="):
            g.labels[stack[-1]] = line.strip()
    assert not stack, "unbalanced braces"
    return g


def draw_text(mnt, tmp_path, name="out.dot") -> str:
    out = tmp_path / name
    r = vfakefs("draw", str(mnt.path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out.read_text()


def test_every_function_a_node_every_group_a_cluster(seed_mnt, tmp_path):
    g = parse(draw_text(seed_mnt, tmp_path))
    bdfs = sorted(p.name for p in seed_mnt.pci.joinpath("devices").iterdir())
    assert sorted(n for n in g.nodes if n != "pci0000:00") == bdfs
    groups = sorted(p.name for p in seed_mnt.sys.joinpath("kernel/iommu_groups").iterdir())
    assert sorted(c.removeprefix("cluster_group_") for c in g.clusters if c.startswith("cluster_group_")) == groups
    for bdf in bdfs:   # each function in the cluster of the group its iommu_group link names
        group = (seed_mnt.devdir(bdf) / "iommu_group").readlink().name
        assert g.cluster_of(bdf) == f"cluster_group_{group}", bdf


def test_gpu_and_its_audio_in_group_42(seed_mnt, tmp_path):
    g = parse(draw_text(seed_mnt, tmp_path))
    assert sorted(g.clusters["cluster_group_42"]) == ["0000:01:00.0", "0000:01:00.1"]
    assert "nouveau" in g.nodes["0000:01:00.0"] and "snd_hda_intel" in g.nodes["0000:01:00.1"]
    # bridges above their children: the root port -> both functions, the root bus -> the port
    assert ("0000:00:01.0", "0000:01:00.0") in g.edges and ("0000:00:01.0", "0000:01:00.1") in g.edges
    assert ("pci0000:00", "0000:00:01.0") in g.edges
    # the switch without ACS: its ports and both NVMe drives share the root port's group
    assert sorted(g.clusters["cluster_group_4"]) == ["0000:00:1d.0", "0000:04:00.0", "0000:05:00.0",
                                                    "0000:05:01.0", "0000:06:00.0", "0000:07:00.0"]


def test_acs_numa_and_netdevs_shown(seed_mnt, tmp_path):
    g = parse(draw_text(seed_mnt, tmp_path))
    assert "ACS: SV RR CR UF" in g.nodes["0000:00:01.0"]       # root port with ACS on
    assert "ACS: none" in g.nodes["0000:00:1d.0"]              # PCH root port without ACS
    assert "ACS:" not in g.nodes["0000:01:00.0"]               # an endpoint without the capability
    assert "eth0" in g.nodes["0000:03:00.0"] and "SR-IOV: 0/63 VFs" in g.nodes["0000:03:00.0"]
    # groups inside their NUMA node's cluster (the X540 is on socket 1, the GPU on 0)
    assert g.parents["cluster_group_8"] == "cluster_numa_1"
    assert g.parents["cluster_group_42"] == "cluster_numa_0"


def test_same_mount_same_text(seed_mnt, tmp_path):
    assert draw_text(seed_mnt, tmp_path, "a.dot") == draw_text(seed_mnt, tmp_path, "b.dot")


def test_vfs_under_their_pf_and_vfio_group_marked(mount_preset, tmp_path):
    m = mount_preset("seed-vtd")
    before = parse(draw_text(m, tmp_path, "before.dot"))
    assert "(vfio)" not in "".join(before.labels.values())
    pf = m.devdir("0000:03:00.0")
    r = sh(f"echo 2 > {pf}/sriov_numvfs && "
           f"echo vfio-pci > {m.devdir('0000:02:00.0')}/driver_override && "
           f"echo 0000:02:00.0 > {m.pci}/drivers/igb/unbind && echo 0000:02:00.0 > {m.pci}/drivers_probe")
    assert r.returncode == 0, r.stderr
    g = parse(draw_text(m, tmp_path, "after.dot"))
    assert "SR-IOV: 2/63 VFs" in g.nodes["0000:03:00.0"]
    vfs = sorted((pf / f"virtfn{i}").readlink().name for i in range(2))
    assert vfs == ["0000:03:10.0", "0000:03:10.2"]
    for vf in vfs:
        assert g.edges[("0000:03:00.0", vf)] == 'style=dashed, label="VF"'    # under its PF
        assert not [e for e in g.edges if e[1] == vf and e[0] != "0000:03:00.0"]
        assert "ixgbevf" in g.nodes[vf]
        group = (m.devdir(vf) / "iommu_group").readlink().name
        assert g.clusters[f"cluster_group_{group}"] == [vf]                 # a group of its own
    group = (m.devdir("0000:02:00.0") / "iommu_group").readlink().name
    assert (m.path / "dev/vfio" / group).exists()
    assert "(vfio)" in g.labels[f"cluster_group_{group}"] and "#ffd7d7" in g.labels[f"cluster_group_{group}"]
    assert "vfio-pci" in g.nodes["0000:02:00.0"]
    assert [c for c, lab in g.labels.items() if "(vfio)" in lab] == [f"cluster_group_{group}"]


def test_missing_mount_is_a_one_line_error(tmp_path):
    r = vfakefs("draw", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.svg"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vfakefs: "), r.stderr
    assert not (tmp_path / "x.svg").exists()


def test_unknown_extension_is_a_usage_error(seed_mnt, tmp_path):
    r = vfakefs("draw", str(seed_mnt.path), "-o", str(tmp_path / "x.jpeg"))
    assert r.returncode == 2
    assert r.stderr.startswith("usage: vfakefs draw") and "unknown format" in r.stderr, r.stderr
    assert not (tmp_path / "x.jpeg").exists()


def test_without_graphviz_svg_fails_cleanly_and_dot_still_works(seed_mnt, tmp_path):
    # a PATH without Graphviz's `dot` (env sets it for vfakefs only)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["env", f"PATH={empty}", sys.executable, "-m", "vfakefs", "draw", str(seed_mnt.path), "-o"]
    r = run([*argv, str(tmp_path / "x.svg")], cwd=REPO)
    assert r.returncode == 1 and "graphviz" in r.stderr.lower() and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "x.svg").exists()
    r = run([*argv, str(tmp_path / "x.dot")], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.dot").read_text().startswith("digraph vfakefs {")


@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG\r\n\x1a\n")])
def test_graphviz_renders(seed_mnt, tmp_path, fmt, magic):
    if not shutil.which("dot"):
        pytest.skip("Graphviz's `dot` is not installed (the graphviz Debian package)")
    out = tmp_path / f"seed.{fmt}"
    r = vfakefs("draw", str(seed_mnt.path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert magic in data[:1000]
    if fmt == "svg":
        text = data.decode()
        assert "IOMMU group 42" in text and "0000:01:00.1" in text

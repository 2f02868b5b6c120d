"""MNT/lib/modules/<release>/: the simulated kernel's module tree (model/modfiles/tree.py:
the .ko files and depmod's indexes, generated from the module catalogue), which `vfakefs
run` binds over the host's /lib/modules, so that kmod (modprobe, modinfo, lsmod) and
lspci -k's libkmod find the simulated kernel's modules and aliases.

<release> is the host's kernel release, os.uname().release: kmod looks its files up in
/lib/modules/$(uname -r), and uname(2) inside `vfakefs run` is the host kernel's (the
namespace has its own mounts, not its own UTS name), so that is the name programs ask for.

Regular files, 0444 and owned by root as installed modules are, reporting their true size
and served through the page cache (Blob): libkmod mmaps the indexes and the modules."""
from __future__ import annotations

import functools
import os

from vfakefs.model.modfiles.tree import module_tree
from vfakefs.sysfs.nodes import Blob, Dir


def release() -> str:
    return os.uname().release


@functools.lru_cache(maxsize=4)
def _tree(rel: str) -> Dir:
    root: dict = {}
    for path, data in module_tree(rel).items():
        *dirs, name = path.split("/")
        d = root
        for part in dirs:
            d = d.setdefault(part, {})
        d[name] = Blob(name, data).bind()

    def to_dir(entries: dict) -> Dir:
        return Dir({k: to_dir(v) if isinstance(v, dict) else v for k, v in entries.items()}, 0o755)
    return to_dir(root)


def lib_dir() -> Dir:
    """MNT/lib: modules/<release>/."""
    return Dir({"modules": Dir(lambda: {release(): _tree(release())}, 0o755)}, 0o755)

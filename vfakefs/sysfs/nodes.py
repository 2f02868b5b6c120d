"""The three node kinds of the view (plus binary attributes, record streams and device nodes).

An Attr is a declaration like the kernel's DEVICE_ATTR: a show/store pair and a
mode, written once at module level; `bind(obj)` pairs it with the object it
describes. Directories list their entries on demand, so the view always draws
the Machine as it is now and holds no hardware state of its own.
"""
from __future__ import annotations

import functools
import stat
from dataclasses import dataclass
from typing import Any, Callable

from vfakefs.model import faults

S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR


@dataclass(frozen=True, slots=True)
class Attr:
    """A text attribute: show(obj) -> str, store(obj, text) -> None or SysfsError.
    per_open: show and store also get a dict kept per open file (vfakefs's own
    request/answer controls: write a request, read its answer on the same fd)."""
    name: str
    show: Callable[[Any], str] | None
    store: Callable[[Any, str], None] | None = None
    mode: int = 0o444
    size: int = 4096
    per_open: bool = False
    # the same store carried out in steps: steps(obj, text) -> None or an object whose
    # step() does the next part (True once done), that a write drives (sriov_numvfs)
    steps: Callable[[Any, str], Any] | None = None
    # a value that moves by itself (a clock): never served from the page cache (--cache)
    volatile: bool = False

    def bind(self, obj) -> Bound:
        return Bound(self, obj)


def store(node: Bound, text: str, stepwise: bool = False):
    """A write of text to a text attribute: its store, through the machine's fault rules
    (model/faults.py), which may refuse it, or hold it: a Held the writer waits on.
    stepwise: an attribute with steps returns what is left to do, for the caller to drive."""
    decl, obj = node.decl, node.obj
    if stepwise and decl.steps is not None:
        return faults.store(obj, decl.name, text, lambda: decl.steps(obj, text))
    return faults.store(obj, decl.name, text, lambda: decl.store(obj, text))


@dataclass(frozen=True, slots=True)
class BinAttr:
    """A binary attribute (config, resourceN): read(obj, offset, n, privileged)."""
    name: str
    read: Callable[[Any, int, int, bool], bytes] | None
    write: Callable[[Any, int, bytes], int] | None = None
    mode: int = 0o644
    size: Callable[[Any], int] | int = 4096
    # its size never moves and every privileged reader reads the same bytes (config):
    # served to root through the page cache in cached mode (--cache)
    cacheable: bool = False

    def bind(self, obj) -> Bound:
        return Bound(self, obj)


@dataclass(frozen=True, slots=True)
class Blob:
    """A regular file of fixed bytes that is no attribute (the simulated /lib/modules): its
    true size in stat, served through the page cache as a disk file is (libkmod maps its
    indexes and the .ko files it reads; a shared map works too)."""
    name: str
    data: bytes
    mode: int = 0o444
    write: None = None

    def read(self, obj, off: int, n: int, privileged: bool) -> bytes:
        return self.data[off:off + n]

    @property
    def size(self) -> int:
        return len(self.data)

    def bind(self, obj=None) -> Bound:
        return Bound(self, obj)


@dataclass(frozen=True, slots=True)
class Stream:
    """A file read record by record, like /dev/kmsg: open(obj, nonblock) -> a reader
    with read(offset, n) -> bytes, or None when there is nothing to read yet (the
    adapter then answers EAGAIN or waits), and write(data) -> count. subscribe(obj, fn)
    calls fn() whenever there may be something new; it returns the unsubscribe
    function. size(obj) is what stat shows: it changes, so it is never cached."""
    name: str
    open: Callable[[Any, bool], Any]
    subscribe: Callable[[Any, Callable[[], None]], Callable[[], None]]
    size: Callable[[Any], int] | int = 0
    mode: int = 0o644

    def bind(self, obj) -> Bound:
        return Bound(self, obj)


# not frozen, though never changed: a frozen dataclass's __init__ sets each field through
# object.__setattr__, and a directory listing makes a Bound per attribute (a PCI
# function's ~30: this is a third of what its first listing costs). Hashed and compared
# by value all the same.
@dataclass(slots=True, unsafe_hash=True)
class Bound:
    decl: Attr | BinAttr | Blob | Stream
    obj: Any

    @property
    def mode(self) -> int:
        return self.decl.mode

    @property
    def size(self) -> int:
        s = self.decl.size
        return s(self.obj) if callable(s) else s

    @property
    def binary(self) -> bool:
        return isinstance(self.decl, (BinAttr, Blob))

    @property
    def cached(self) -> bool:
        """Served through the page cache (fixed contents), not direct_io as attributes are."""
        return isinstance(self.decl, Blob)

    @property
    def stream(self) -> bool:
        return isinstance(self.decl, Stream)


@dataclass(frozen=True, slots=True)
class Link:
    target: str
    mode: int = 0o777
    size: int = 0


@dataclass(frozen=True, slots=True)
class CharDev:
    major: int
    minor: int
    mode: int = 0o600
    size: int = 0


class Dir:
    """entries() -> {name: node}, computed when asked. `tmpfs` dirs (under /dev)
    report tmpfs sizes instead of sysfs's 0. entry(name) -> the node entries() would
    hold under name, or None: given by a large listing that changes a few names at a
    time (bus/pci/devices), so that the FUSE layer mends its copy of the listing for the
    names a change named instead of making it all again. find(name) -> the node entries()
    holds under name where one name tells it cheaply, else None (ask entries()), and
    subdirs() -> how many of entries() are directories (its nlink): a PCI function's, whose
    first lookup in a walk (`lspci` opens 7 of its ~60 names) need not list them all."""
    __slots__ = ("entries", "mode", "tmpfs", "entry", "find", "subdirs")

    def __init__(self, entries: Callable[[], dict] | dict, mode: int = 0o755, tmpfs: bool = False,
                 entry: Callable[[str], Any] | None = None, find: Callable[[str], Any] | None = None,
                 subdirs: Callable[[], int] | None = None):
        self.entries = entries if callable(entries) else (lambda e=entries: e)
        self.mode = mode
        self.tmpfs = tmpfs
        self.entry = entry
        self.find = find
        self.subdirs = subdirs


@dataclass(frozen=True, slots=True)
class AttrGroup:
    """The kernel's attribute_group: attrs shown where is_visible(obj) says so,
    optionally in a named subdirectory."""
    attrs: tuple
    is_visible: Callable[[Any], bool] = lambda obj: True
    name: str | None = None

    def entries(self, obj) -> dict:
        if not self.is_visible(obj):
            return {}
        out = {a.name: Bound(a, obj) for a in self.attrs}   # (a.bind(obj), a call less each)
        if self.name:
            return {self.name: Dir(out)}
        return out


@functools.lru_cache(maxsize=1 << 16)
def rel(from_dir: str, to: str) -> str:
    """A relative symlink target as the kernel writes it (paths relative to /sys).

    kernfs_get_target_path() climbs from the link's directory until it meets an
    ancestor of the target's *parent*, so a link to an ancestor of its own
    directory climbs one level past it: net/eth0/device -> ../../../0000:02:00.0.
    """
    here, there = from_dir.split("/"), to.rpartition("/")[0].split("/")   # (posixpath.dirname(to))
    common = 0
    while common < min(len(here), len(there)) and here[common] == there[common]:
        common += 1
    down = to.split("/")[common:]
    return "/".join([".."] * (len(here) - common) + down)


def node_type(node) -> int:
    if isinstance(node, Dir):
        return S_IFDIR
    if isinstance(node, Link):
        return S_IFLNK
    if isinstance(node, CharDev):
        return S_IFCHR
    return S_IFREG

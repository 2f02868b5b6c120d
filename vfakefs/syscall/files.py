"""The files the daemon hands to trapped programs in place of /dev/vfio/* and the
device fds: memfds, one inode per object.

A program's fd is recognised by the file it names (/proc/TID/fd/N: each memfd has
a name of its own), so dup, fork, fd passing and fd reuse need no bookkeeping here. The last close is seen
through inotify: the daemon keeps one description of the inode (held) and hands out
others; every handed description's final close is an IN_CLOSE_* event on the inode,
and when the count of handed descriptions reaches zero the object is released.
"""
from __future__ import annotations

import ctypes
import os
import struct

_libc = ctypes.CDLL(None, use_errno=True)
IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_IGNORED, IN_Q_OVERFLOW = 0x8, 0x10, 0x8000, 0x4000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MEMFD_NAME = "vfakefs-vfio-"
_EVENT = struct.Struct("iIII")     # struct inotify_event: wd, mask, cookie, len (then name)


class File:
    """One object's inode: `obj` is the model's (a container, group or device);
    release(obj) runs once, when the last description a program had is closed."""

    def __init__(self, files: "Files", kind: str, obj, release, size: int = 0):
        self.files, self.kind, self.obj, self._release = files, kind, obj, release
        files.made += 1
        # the name says which object it is: /proc/PID/fd/N reads "/memfd:<name> (deleted)"
        self.name = f"{MEMFD_NAME}{kind}-{files.token}-{files.made}"
        self.held = os.memfd_create(self.name, os.MFD_CLOEXEC)
        if size:
            os.ftruncate(self.held, size)      # sparse: no page is allocated until written
        self.handed = 0
        self.wd = _libc.inotify_add_watch(files.fd, f"/proc/self/fd/{self.held}".encode(),
                                          IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)
        if self.wd < 0:
            os.close(self.held)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.link = f"/memfd:{self.name} (deleted)"
        files.by_link[self.link] = files.by_wd[self.wd] = files.by_id[id(obj)] = self

    def hand_out(self, give) -> int:
        """A new description of the inode, given to the program by give(fd) (the seccomp
        ADDFD); its final close, there or here when the program is gone, counts down."""
        fresh = os.open(f"/proc/self/fd/{self.held}", os.O_RDWR | os.O_CLOEXEC)
        self.handed += 1
        try:
            return give(fresh)
        finally:
            os.close(fresh)

    def closed_once(self) -> None:
        self.handed -= 1
        if self.handed <= 0:
            self.release()

    def release(self) -> None:
        if self.held < 0:
            return
        del self.files.by_link[self.link], self.files.by_wd[self.wd], self.files.by_id[id(self.obj)]
        _libc.inotify_rm_watch(self.files.fd, self.wd)
        os.close(self.held)
        self.held = -1
        self._release(self.obj)


class Files:
    """Every injected inode, by the link text of its fds, by inotify watch and by model object."""

    def __init__(self):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.by_wd: dict[int, File] = {}
        self.by_id: dict[int, File] = {}
        self.by_link: dict[str, File] = {}
        self.token, self.made = os.urandom(8).hex(), 0

    def by_obj(self, obj) -> File | None:
        """The file already handed out for a model object (a device opened again)."""
        return self.by_id.get(id(obj))

    def of(self, tid: int, fd: int) -> File | None:
        """The object behind the program's fd, or None (not ours, or not open).

        The link's text names the memfd, and each of ours has a name of its own (with
        this daemon's random token): one readlink, where a stat through the link
        cost as much again and would reach the file's own filesystem (a file on our
        own FUSE mount would then wait for us). A program would have to make a memfd
        of exactly that name to be mistaken for one of ours."""
        try:
            return self.by_link.get(os.readlink(f"/proc/{tid}/fd/{fd}"))
        except OSError:
            return None

    def closes(self) -> None:
        """Read the pending inotify events: each IN_CLOSE_* is one description gone."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            pos = 0
            while pos < len(data):
                wd, mask, _cookie, n = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + n
                f = self.by_wd.get(wd)
                if f is not None and mask & (IN_CLOSE_WRITE | IN_CLOSE_NOWRITE):
                    f.closed_once()

    def close(self) -> None:
        for f in list(self.by_link.values()):
            f.release()
        os.close(self.fd)

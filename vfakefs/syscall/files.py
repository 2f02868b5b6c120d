"""The files the daemon hands to trapped programs in place of /dev/vfio/* and the
device fds: memfds, one inode per object.

A program's fd is recognised by the inode it names (stat of /proc/TID/fd/N), so
dup, fork, fd passing and fd reuse need no bookkeeping here. The last close is seen
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
MEMFD_PREFIX = "/memfd:" + MEMFD_NAME      # what /proc/PID/fd/N reads for one of ours
_EVENT = struct.Struct("iIII")     # struct inotify_event: wd, mask, cookie, len (then name)


class File:
    """One object's inode: `obj` is the model's (a container, group or device);
    release(obj) runs once, when the last description a program had is closed."""

    def __init__(self, files: "Files", kind: str, obj, release, size: int = 0):
        self.files, self.kind, self.obj, self._release = files, kind, obj, release
        self.held = os.memfd_create(f"{MEMFD_NAME}{kind}", os.MFD_CLOEXEC)
        if size:
            os.ftruncate(self.held, size)      # sparse: no page is allocated until written
        st = os.fstat(self.held)
        self.key = (st.st_dev, st.st_ino)
        self.handed = 0
        self.wd = _libc.inotify_add_watch(files.fd, f"/proc/self/fd/{self.held}".encode(),
                                          IN_CLOSE_WRITE | IN_CLOSE_NOWRITE)
        if self.wd < 0:
            os.close(self.held)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        files.by_key[self.key] = files.by_wd[self.wd] = files.by_id[id(obj)] = self

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
        del self.files.by_key[self.key], self.files.by_wd[self.wd], self.files.by_id[id(self.obj)]
        _libc.inotify_rm_watch(self.files.fd, self.wd)
        os.close(self.held)
        self.held = -1
        self._release(self.obj)


class Files:
    """Every injected inode, by (st_dev, st_ino) and by inotify watch."""

    def __init__(self):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.by_key: dict[tuple[int, int], File] = {}
        self.by_wd: dict[int, File] = {}
        self.by_id: dict[int, File] = {}

    def by_obj(self, obj) -> File | None:
        """The file already handed out for a model object (a device opened again)."""
        return self.by_id.get(id(obj))

    def of(self, tid: int, fd: int) -> File | None:
        """The object behind the program's fd, or None (not ours, or not open). The
        link's text is read first: a stat through it would reach the file's own
        filesystem, and a file on our own FUSE mount would then wait for us."""
        link = f"/proc/{tid}/fd/{fd}"
        try:
            if not os.readlink(link).startswith(MEMFD_PREFIX):
                return None
            st = os.stat(link)
        except OSError:
            return None
        return self.by_key.get((st.st_dev, st.st_ino))

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
        for f in list(self.by_key.values()):
            f.release()
        os.close(self.fd)

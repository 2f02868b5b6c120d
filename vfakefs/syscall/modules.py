"""The module system calls (kernel/module/main.c), answered from the model's module list:
init_module(image, len, args), finit_module(fd, args, flags), delete_module(name, flags).

The module an image holds is named by its .modinfo section's `name=` (what modpost
writes and depmod reads); for finit_module of a file without one, by the file's name.
The checks come in the kernel's order: CAP_SYS_MODULE (EPERM), the flags (EINVAL), the
file (EBADF, EINVAL), the ELF image (ENOEXEC), then load_module()'s and
delete_module()'s own answers (model/base/module.py). Files are read in a worker thread:
the simulated /lib/modules may be our own mount, which this loop serves meanwhile.
"""
from __future__ import annotations

import errno
import os
import stat
import struct

import trio

from vfakefs.model.base.modules import module_name
from vfakefs.model.errors import SysfsError
from vfakefs.syscall.process import ProcMemory, fetch_fd

NR_init_module, NR_delete_module, NR_finit_module = 175, 176, 313
CAP_SYS_MODULE, CAP_SYSLOG = 16, 34
MODULE_NAME_LEN = 56                       # MAX_PARAM_PREFIX_LEN: 64 - sizeof(unsigned long)
# finit_module flags (include/uapi/linux/module.h)
MODULE_INIT_IGNORE_MODVERSIONS, MODULE_INIT_IGNORE_VERMAGIC, MODULE_INIT_COMPRESSED_FILE = 1, 2, 4
ELF_EHDR = 64
IMAGE_MAX = 1 << 30                        # more than any module: what vmalloc would refuse here


def capable(tid: int, cap: int) -> bool:
    """capable(cap) of the trapped thread: its effective set."""
    with open(f"/proc/{tid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def modinfo(image: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 object's .modinfo section; ENOEXEC when the
    image is not one (elf_validity_check: magic, class, section headers in the image)."""
    if len(image) < ELF_EHDR or image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise SysfsError(errno.ENOEXEC)
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    if shentsize != 64 or shnum == 0 or shstrndx >= shnum or shoff + shnum * 64 > len(image):
        raise SysfsError(errno.ENOEXEC)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * 64) for i in range(shnum)]
    str_off, str_size = sections[shstrndx][4], sections[shstrndx][5]
    if str_off + str_size > len(image):
        raise SysfsError(errno.ENOEXEC)
    names = image[str_off:str_off + str_size]
    out: dict[str, str] = {}
    for sh_name, sh_type, _flags, _addr, off, size, *_ in sections:
        end = names.find(b"\0", sh_name)
        if names[sh_name:end] != b".modinfo" or sh_type == 8:           # SHT_NOBITS has no bytes
            continue
        if off + size > len(image):
            raise SysfsError(errno.ENOEXEC)
        for item in image[off:off + size].split(b"\0"):
            key, eq, value = item.partition(b"=")
            if eq and key.decode(errors="replace") not in out:
                out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def _image_name(image: bytes, fallback: str | None) -> str:
    name = modinfo(image).get("name") or fallback
    if not name:
        raise SysfsError(errno.ENOEXEC)        # "No module found in object"
    return name


def _file_name(path: str) -> str:
    """What a module file's name says of its module: pci-stub.ko.xz -> pci_stub."""
    base = os.path.basename(path)
    return module_name(base.split(".ko", 1)[0]) if ".ko" in base else ""


class ModuleCalls:
    def __init__(self, host):
        self.host = host

    @property
    def m(self):
        return self.host.machine

    def _args(self, mem: ProcMemory, ptr: int) -> str:
        # strndup_user(uargs, ~0UL >> 1): a fault is EFAULT
        return os.fsdecode(mem.read_string(ptr, 1 << 20))

    def init_module(self, tid: int, image_ptr: int, length: int, args_ptr: int) -> int:
        if not capable(tid, CAP_SYS_MODULE):
            raise SysfsError(errno.EPERM)
        if length < ELF_EHDR:
            raise SysfsError(errno.ENOEXEC)
        if length > IMAGE_MAX:
            raise SysfsError(errno.ENOMEM)         # copy_module_from_user: the vmalloc fails
        mem = ProcMemory(tid)
        image = mem.read(image_ptr, length)
        args = self._args(mem, args_ptr)
        self.m.modules.load(_image_name(image, None), args)
        return 0

    def finit_module(self, tid: int, fd: int, args_ptr: int, flags: int):
        """The flags and the fd are checked here; the file is read by a worker thread."""
        if not capable(tid, CAP_SYS_MODULE):
            raise SysfsError(errno.EPERM)
        if flags & ~(MODULE_INIT_IGNORE_MODVERSIONS | MODULE_INIT_IGNORE_VERMAGIC | MODULE_INIT_COMPRESSED_FILE):
            raise SysfsError(errno.EINVAL)
        args = self._args(ProcMemory(tid), args_ptr)
        try:
            mine = fetch_fd(tid, fd)
        except OSError:
            raise SysfsError(errno.EBADF) from None
        try:
            st = os.fstat(mine)
            fl = _fd_flags(tid, fd)
        except OSError:
            os.close(mine)
            raise SysfsError(errno.EBADF) from None
        if fl is not None and (fl & os.O_ACCMODE == os.O_WRONLY or fl & os.O_PATH):
            os.close(mine)
            raise SysfsError(errno.EBADF)          # fdget() skips O_PATH files; kernel_read_file: FMODE_READ
        if not stat.S_ISREG(st.st_mode) or st.st_size <= 0:
            os.close(mine)
            raise SysfsError(errno.EINVAL)
        if flags & MODULE_INIT_COMPRESSED_FILE:
            os.close(mine)
            raise SysfsError(errno.EOPNOTSUPP)     # no CONFIG_MODULE_DECOMPRESS
        try:
            path = os.readlink(f"/proc/{tid}/fd/{fd}")
        except OSError:
            path = ""

        async def read_and_load() -> int:
            try:
                image = await trio.to_thread.run_sync(_read_all, mine, st.st_size)
            finally:
                os.close(mine)
            self.m.modules.load(_image_name(image, _file_name(path)), args)
            return 0
        return read_and_load

    def delete_module(self, tid: int, name_ptr: int, flags: int) -> int:
        if not capable(tid, CAP_SYS_MODULE):
            raise SysfsError(errno.EPERM)
        mem = ProcMemory(tid)
        try:                                   # strncpy_from_user(name, .., MODULE_NAME_LEN - 1)
            raw = mem.read_string(name_ptr, MODULE_NAME_LEN - 1)
        except SysfsError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
            raw = mem.read(name_ptr, MODULE_NAME_LEN - 1)
        name = os.fsdecode(raw)
        self.m.modules.unload(name, flags)
        return 0


def _fd_flags(tid: int, fd: int) -> int | None:
    try:
        with open(f"/proc/{tid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8)
    except OSError:
        return None
    return None


def _read_all(fd: int, size: int) -> bytes:
    out, off = [], 0
    while off < size:
        chunk = os.pread(fd, min(1 << 20, size - off), off)
        if not chunk:
            break
        out.append(chunk)
        off += len(chunk)
    return b"".join(out)

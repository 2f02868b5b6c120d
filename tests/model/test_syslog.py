"""syslog(2) on the simulated log (model/syslog.py, after do_syslog in kernel/printk/printk.c)."""
import errno

import pytest

from vfakefs.model import syslog as S
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import KERN_WARNING, LOG_BUF_LEN, KernelLog


def make() -> S.Syslog:
    log = KernelLog(clock=lambda: 0.0)
    log.boot("Linux version 6.1", level=5, at=0)
    log.boot("Command line: quiet")
    log.log("e1000e 0000:02:00.0: removed PHC", KERN_WARNING)
    return S.Syslog(log)


def test_read_all_formats_as_syslog_print_all():
    out = make().call(S.READ_ALL, 4096, privileged=False)
    assert out.decode().splitlines() == ["<5>[    0.000000] Linux version 6.1",
                                         "<6>[    0.000317] Command line: quiet",
                                         "<4>[    1.000317] e1000e 0000:02:00.0: removed PHC"]


def test_read_all_gives_the_newest_records_that_fit():
    sl = make()
    full = sl.call(S.READ_ALL, 4096, False)
    last = full.splitlines(keepends=True)[-1]
    assert sl.call(S.READ_ALL, len(last) + 5, False) == last
    assert sl.call(S.READ_ALL, len(last) - 1, False) == b""
    assert sl.call(S.READ_ALL, 0, False) == 0
    assert sl.call(S.SIZE_BUFFER, 0, False) == LOG_BUF_LEN


def test_clear_and_read_clear_need_cap_syslog_and_move_clear_seq():
    sl = make()
    for action in (S.CLEAR, S.READ_CLEAR, S.READ, S.SIZE_UNREAD, S.CONSOLE_OFF, S.OPEN):
        with pytest.raises(SysfsError) as e:
            sl.call(action, 10, privileged=False)
        assert e.value.errno == errno.EPERM
    assert sl.call(S.READ_CLEAR, 4096, True).count(b"\n") == 3
    assert sl.call(S.READ_ALL, 4096, False) == b""
    sl.log.log("after")
    assert sl.call(S.READ_ALL, 4096, False).endswith(b"] after\n")
    sl.call(S.CLEAR, 0, True)
    assert sl.call(S.READ_ALL, 4096, False) == b""


def test_read_consumes_and_size_unread_counts_what_is_left():
    sl = make()
    unread = sl.call(S.SIZE_UNREAD, 0, True)
    first = sl.call(S.READ, 40, True)
    assert first == b"<5>[    0.000000] Linux version 6.1\n"
    assert sl.call(S.SIZE_UNREAD, 0, True) == unread - len(first)
    rest = sl.call(S.READ, 4096, True)
    assert rest.count(b"\n") == 2 and sl.call(S.SIZE_UNREAD, 0, True) == 0


@pytest.mark.parametrize("action,length", [(S.READ_ALL, -1), (S.CONSOLE_LEVEL, 0), (S.CONSOLE_LEVEL, 9), (11, 0)])
def test_bad_arguments_are_einval(action, length):
    with pytest.raises(SysfsError) as e:
        make().call(action, length, True)
    assert e.value.errno == errno.EINVAL

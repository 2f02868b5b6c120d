"""The unmodified system tools the client tests run, from Debian's packages
(tools/fetch-clients extracts them into .clients/; `make test` runs it first)."""
from __future__ import annotations

from pathlib import Path

CLIENTS = Path(__file__).resolve().parents[1] / ".clients" / "bin"


def client(name: str) -> str:
    """The path of a fetched tool (modprobe, udevadm, driverctl, dpdk-devbind.py,
    lstopo-no-graphics, ...); fails, not skips, when it is missing."""
    path = CLIENTS / name
    assert path.exists(), f"{path} missing: run tools/fetch-clients (make test does)"
    return str(path)

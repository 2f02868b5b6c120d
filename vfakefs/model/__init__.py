"""The simulated hardware. Plain Python and numpy: no FUSE, no sysfs view."""
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.errors import SysfsError, TopologyError
from vfakefs.model.machine import Machine

__all__ = ["Bdf", "Machine", "SysfsError", "TopologyError"]

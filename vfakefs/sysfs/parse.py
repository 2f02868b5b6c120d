"""The kernel's parsers for sysfs stores: the model's (model/parse.py), which module
parameters share (param_set_* parse with the same kstrto* functions)."""
from vfakefs.model.parse import (cstr, kstrtobool, kstrtoint, kstrtol, kstrtoul,  # noqa: F401
                                 simple_strtoul10, sysfs_streq)

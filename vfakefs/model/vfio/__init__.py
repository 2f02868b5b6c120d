"""VFIO (drivers/vfio/): containers, groups and the type1 IOMMU backend, in plain Python.

VfioContainer is an open /dev/vfio/vfio, VfioGroup an open /dev/vfio/<N>; their
methods are the ioctls, raising SysfsError(errno) as the kernel returns it.
"""

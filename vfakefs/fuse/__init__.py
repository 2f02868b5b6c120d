"""The thin FUSE adapter: inodes, errnos and invalidation. Nothing here knows PCI."""

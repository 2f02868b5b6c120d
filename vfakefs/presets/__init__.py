"""The built-in machines (TOML topologies beside this file)."""

DEFAULT = "seed-vtd"     # what `vfakefs mount` and the pytest plugin mount when told nothing

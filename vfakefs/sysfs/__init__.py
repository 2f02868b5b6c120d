"""The sysfs view: a tree of Dir / Attr / Link nodes drawn from a Machine."""

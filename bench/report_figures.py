"""bench/figures.py's rows from the reports of the scripts that keep a big report of
their own (read_rate.py, sriov_scale.py): kept here, beside those scripts, so each
script's change is two lines."""
from __future__ import annotations

from figures import collect, figure


# issue 13: open+read+close of one attribute against the C server, pinned, same run
TARGET_READ1_VS_C = {False: 0.25, True: 0.5}


def read_figures(rep: dict, a, METRICS: dict) -> list[dict]:
    """bench/figures.py's rows: each vfakefs rate beside its baseline of this run."""
    mode = "cached" if a.cache else "strict"
    res = rep.get("results", {})

    def rate(m: str, base: str, base_what: str, target=None):
        def build():
            return figure(f"{METRICS[m][0]}, {mode}", res[m]["vfakefs"]["ops_per_s"], "ops/s",
                          baseline=res[m][base]["ops_per_s"], baseline_what=base_what, target=target)
        build.__name__ = f"{m}/{base}"
        return build

    c = "C libfuse server (direct_io), same run"
    ceiling = "minimal pyfuse3 server" + (" (keep_cache)" if a.cache else "") + ", same run"

    def pyfuse3_ceiling():   # the limit of a pyfuse3 server answering the same requests
        return figure(f"{METRICS['read1'][0]}, {mode}: minimal pyfuse3 server", res["read1"]["pyfuse3"]["ops_per_s"],
                      "ops/s", baseline=res["read1"]["C-libfuse"]["ops_per_s"], baseline_what=c)
    return collect([
        rate("read1", "C-libfuse", c, ("ratio", ">=", TARGET_READ1_VS_C[a.cache])),
        rate("read1", "pyfuse3", ceiling),
        pyfuse3_ceiling,
        rate("read1_raw", "C-libfuse", c),
        rate("read1", "real-sysfs", "the host's sysfs"),
        rate("readN", "tmpfs", "tmpfs copy of the tree"),
        rate("stat", "tmpfs", "tmpfs copy of the tree"),
        rate("listdir", "tmpfs", "tmpfs copy of the tree"),
        lambda: figure(f"`vfakefs mount` to a ready mount ({a.topology}, {mode}), median",
                       rep["mount"]["ready_median_s"], "s"),
    ])

# issue 13, at 8 PFs x 256 VFs: enabling and disabling each < 200 ms through the
# mount, the last PF's 256 VFs within 1.2 of the first's
ISSUE13_TOTAL_S = 0.2
ISSUE13_LINEAR = 1.2


def scale_figures(a, rep: dict, errors: list[str]) -> list[dict]:
    """bench/figures.py's rows (a part that did not run is left out)."""
    from sriov_scale import SEED_PF, SEED_TOPOLOGY, SEED_VFS, TARGET_BYTES_PER_VF, TARGET_TOTAL_S
    sc, sd = rep.get("scale", {}), rep.get("seed", {})
    m = sc.get("mount", {})
    n = a.pfs * a.vfs_per_pf
    issue = a.pfs == 8 and a.vfs_per_pf == 256     # the issue's targets are for this size
    tm = sc.get("tmpfs", {})

    def growth(xs):
        return xs[-1] / xs[0]

    def enable():
        return figure(f"enable {n:,} VFs ({a.pfs} x {a.vfs_per_pf}) through the mount",
                      sum(w["write_s"] for w in m["enable"]), "s", baseline=tm["create_total_s"],
                      baseline_what="tmpfs: create the same trees",
                      target=("value", "<", ISSUE13_TOTAL_S) if issue else None)

    def disable():
        return figure(f"disable {n:,} VFs through the mount (after ls -R, lspci)",
                      sum(d["write_s"] for d in m["disable"]), "s", baseline=tm["remove_total_s"],
                      baseline_what="tmpfs: remove them",
                      target=("value", "<", ISSUE13_TOTAL_S) if issue else None)

    def enable_linear():
        return figure(f"enable linearity: last {a.vfs_per_pf} VFs / first {a.vfs_per_pf}, mount",
                      growth([w["write_s"] for w in m["enable"]]), "x",
                      baseline=growth(tm["create_per_pf_s"]), baseline_what="tmpfs, same",
                      ratio=False, target=("value", "<=", ISSUE13_LINEAR))

    def disable_linear():
        return figure(f"disable linearity: last {a.vfs_per_pf} VFs / first {a.vfs_per_pf}, mount",
                      growth([d["write_s"] for d in m["disable"]]), "x",
                      baseline=growth(tm["remove_per_pf_s"]), baseline_what="tmpfs, same",
                      ratio=False, target=("value", "<=", ISSUE13_LINEAR))

    def model():
        return figure(f"enable {n:,} VFs in the model alone", sum(sc["model"]["per_pf_s"]), "s",
                      baseline=tm["create_total_s"], baseline_what="tmpfs: create the same trees",
                      target=("value", "<", TARGET_TOTAL_S) if issue else None)

    def write_walk():
        return figure(f"enable {n:,} VFs through the mount + first walk of their names",
                      sum(w["write_s"] for w in m["enable"]) + m["first_walk_s"], "s",
                      baseline=tm["create_walk_s"], baseline_what="tmpfs: create + walk")

    def seed_write():
        return figure(f"{SEED_VFS} VFs on {SEED_TOPOLOGY} {SEED_PF}, the write, median",
                      sd["mount_enable_median_write_s"], "s", baseline=sd["tmpfs"]["create_s"],
                      baseline_what="tmpfs: create the same trees")

    def seed_walk():
        return figure(f"{SEED_VFS} VFs on {SEED_TOPOLOGY}, write + first walk, median",
                      sd["mount_enable_walk_median_s"], "s", baseline=sd["tmpfs"]["create_walk_s"],
                      baseline_what="tmpfs: create + walk")

    def ls_r():
        return figure(f"ls -R MNT/sys/bus/pci/devices/, {n:,} VFs enabled", m["ls_R_s"], "s",
                      baseline=tm.get("ls_R_s"), baseline_what="tmpfs tree")

    def lspci():
        return figure(f"lspci -nn, {n:,} VFs enabled (host's pci.ids)", m["lspci_s"], "s")

    def rss():
        return figure("daemon RSS per VF after enabling", rep["daemon_rss_bytes_per_vf"] / 1024, "KiB",
                      target=("value", "<", TARGET_BYTES_PER_VF / 1024))

    def traced():
        return figure("model: bytes live per VF (tracemalloc)",
                      sc["model_memory"]["traced_bytes_per_vf"] / 1024, "KiB",
                      target=("value", "<", TARGET_BYTES_PER_VF / 1024))

    return collect([enable, disable, enable_linear, disable_linear, model, write_walk, seed_write,
                    seed_walk, ls_r, lspci, rss, traced], errors)

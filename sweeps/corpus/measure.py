"""The installed-code corpus on this machine (data=installed_code_bpe, windtunnel/data/installed.py): what text it
holds per root and kind, what the duplicate check removed, how the held-out split falls by package, and how long its
prepare takes; beside it, data=stdlib_site_bpe (the earlier GPU corpus) on the same machine for its held-out overlap.
Run on the lent H200 through run.sh:   python3 sweeps/corpus/measure.py OUT_JSON
"""
import collections
import json
import os
import sys
import time
from pathlib import Path

from windtunnel.compose import compose
from windtunnel.data import installed, prepare
from windtunnel.data.sources import cache_root, held_out


def kind(key: str) -> str:
    return next(name for name, suffixes in (("python", installed.PYTHON), ("c_cpp", installed.C_CPP),
                                            ("docs_html_js", installed.DOCS)) if key.endswith(suffixes))


def main(out: Path) -> None:
    cfg = compose(["data=installed_code_bpe"]).data
    start = time.time()
    listing = sorted((f for prefix, root, skip in installed.roots() for f in installed._walk(prefix, root, skip)),
                     key=lambda f: f[0])
    kept = installed.files(cache_root(cfg))
    listed_s = time.time() - start
    kept_keys = {k for k, _ in kept}
    by_root, by_kind, dropped = collections.Counter(), collections.Counter(), collections.Counter()
    groups, val_groups = collections.Counter(), collections.Counter()
    for key, path, size, _ in listing:
        if key in kept_keys:
            by_root[key.split("/")[0]] += size
            by_kind[kind(key)] += size
            groups[installed.group(key)] += size
            if held_out(cfg, key):
                val_groups[installed.group(key)] += size
        else:
            dropped[kind(key)] += size
    report = {"roots": [[p, str(r)] for p, r, _ in installed.roots()], "files_listed": len(listing),
              "files_kept": len(kept), "bytes_kept_by_root": dict(by_root), "bytes_kept_by_kind": dict(by_kind),
              "bytes_dropped_by_kind": dict(dropped), "groups": len(groups), "val_groups": len(val_groups),
              "val_bytes_by_group_top20": val_groups.most_common(20), "largest_groups": groups.most_common(20),
              "list_and_dedupe_s": listed_s, "cpus": os.cpu_count()}
    print(json.dumps({k: v for k, v in report.items() if "top" not in k and "largest" not in k}), flush=True)
    for name in ("installed_code_bpe", "stdlib_site_bpe"):
        cfg = compose([f"data={name}"]).data
        start = time.time()
        corpus = prepare(cfg)
        report[name] = {"prepare_s": time.time() - start, **{k: v for k, v in corpus.meta.items() if k != "config"}}
        print(name, json.dumps(report[name]), flush=True)
        out.write_text(json.dumps(report, indent=1))
    report["list_cached_s"] = _timed(lambda: installed.files(cache_root(cfg)))
    out.write_text(json.dumps(report, indent=1))


def _timed(fn) -> float:
    start = time.time()
    fn()
    return time.time() - start


if __name__ == "__main__":
    main(Path(sys.argv[1]))

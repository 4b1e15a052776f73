#!/usr/bin/env python
"""Where one image's time goes in radnode's listener (in-process, one sender).

Starts a ``ListenerService`` in this process, wraps a few listener functions
with ``time.perf_counter`` timers, sends ``--count`` instances of the ingest
benchmark's data with DCMTK ``storescu`` (one association), and prints the
wall time per image next to the time spent in each wrapped stage and the
process CPU per image. py-spy is not available on the benchmark machines;
this is the cheap substitute (BENCHMARKS.md, "What limits throughput").

    python bench/ingest_profile.py --count 300 [--no-fsync] [--senders 4] [--cprofile]
"""

from __future__ import annotations

import argparse
import collections
import functools
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ingest import dataset  # noqa: E402
from tests.support import dcmtk  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

TIMES: dict[str, list[float]] = collections.defaultdict(list)


def timed(owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[label].append(time.perf_counter() - t0)

    setattr(owner, name, wrapper)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--senders", type=int, default=1, help="parallel storescu associations (files split among them)")
    ap.add_argument("--cprofile", action="store_true", help="cProfile the association thread's handler")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--threads", action="store_true", help="cProfile the DUL and association threads (tottime)")
    args = ap.parse_args()
    files = dataset(args.count)

    from radnode.listener import handlers, spool
    from radnode.listener.service import ListenerService
    from radnode.settings import Settings

    timed(handlers, "_store", "handle_store (all)")
    timed(handlers, "_read_header", "header parse")
    timed(spool.Spool, "write", "spool write (+fsync)")
    profs: list[Any] = []
    if args.threads:
        import cProfile

        from radnode.listener import reactor

        for cls, name in ((reactor.EventDrivenDUL, "run_reactor"), (reactor.EventDrivenAssociation, "_run_reactor")):
            def make(fn: Callable[..., Any]) -> Callable[..., Any]:
                @functools.wraps(fn)
                def run(self: Any) -> Any:
                    p = cProfile.Profile()
                    profs.append(p)
                    p.enable()
                    try:
                        return fn(self)
                    finally:
                        p.disable()
                return run
            setattr(cls, name, make(getattr(cls, name)))
    prof = None
    if args.cprofile:
        import cProfile

        prof = cProfile.Profile()
        inner = handlers._store

        def profiled(*a: Any, **k: Any) -> Any:
            prof.enable()  # type: ignore[union-attr]
            try:
                return inner(*a, **k)
            finally:
                prof.disable()  # type: ignore[union-attr]

        handlers._store = profiled  # type: ignore[assignment]

    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", port=free_port(), listener={"fsync": not args.no_fsync})
        service = ListenerService(settings)
        service.start()
        try:
            time.sleep(0.3)
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            from concurrent.futures import ThreadPoolExecutor

            parts = [files[i :: args.senders] for i in range(args.senders)]
            with ThreadPoolExecutor(args.senders) as pool:
                results = list(pool.map(lambda part: dcmtk.storescu("127.0.0.1", settings.port, part, "RADNODE"), parts))
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            for res in results:
                assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        finally:
            service.stop()
    n = len(files)
    print(f"{n} images, fsync={'off' if args.no_fsync else 'on'}: {n / wall:.0f} images/s, {wall / n * 1e3:.2f} ms/image wall")
    print(f"listener CPU: {(r1.ru_utime - r0.ru_utime) / n * 1e3:.2f} ms user + {(r1.ru_stime - r0.ru_stime) / n * 1e3:.2f} ms sys per image"
          f" ({(r1.ru_minflt - r0.ru_minflt) / n:.0f} minor page faults, {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.1f} voluntary"
          f" + {(r1.ru_nivcsw - r0.ru_nivcsw) / n:.1f} involuntary context switches per image)")
    for label, xs in TIMES.items():
        print(f"  {label:<24} median {statistics.median(xs) * 1e3:6.3f} ms  mean {statistics.mean(xs) * 1e3:6.3f} ms  (n={len(xs)})")
    if profs:
        import pstats

        st = pstats.Stats(profs[0])
        for p in profs[1:]:
            st.add(p)
        st.sort_stats(args.sort).print_stats(45)
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())

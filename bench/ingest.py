#!/usr/bin/env python
"""Ingest throughput: radnode's DICOM listener against DCMTK ``storescp``.

radnode issue 2. Prints numbers; it is not a test. It generates ``--count``
synthetic MR instances (256x256, 16-bit, Explicit VR Little Endian, realistic
Siemens/GE-like headers, four series of one study) once into a cache folder,
then, round after round, sends them with DCMTK ``storescu`` (one association
per sender) to

* DCMTK ``storescp`` writing every instance to a temporary folder (``+B``,
  bit-preserving; ``--fork`` with several senders so it, too, can use every
  core), and
* ``radnode listen`` (a fresh data dir each round, with the configured
  listener processes and fsync on/off),

alternately, with one sender and with four senders in parallel (the files
split into four groups, four storescu processes at once). Wall time runs from
the first sender's start to the last sender's exit. After every run the
receiver's output is counted; a run that lost instances is flagged.

    python bench/ingest.py                       # 3 rounds, 1000 images, processes 1, fsync on and off
    python bench/ingest.py --processes 1,2 --fsync on --json

DCMTK binaries are called by absolute path (``/usr/bin``) with
``TCP_NODELAY=1`` in their environment (see tests/support/dcmtk.py).

Every run's received files stay on disk until the benchmark ends. Deleting a
run's files just before the next run made that run's inode allocations slow
(ext4 without a journal, as here, skips inodes deleted in the last minute,
scanning them one by one) — a cost a receiving node does not meet in service,
and one that hit radnode (two new inodes per image: the file and its SOP
claim) harder than storescp (one).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.dcmtk import dcmtk_env, storescp_process, tool  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

OUT = ROOT / "bench" / "out"
SERIES = ("t1", "t2", "flair", "t1c")
AE_TITLE = "RADNODE"


# --------------------------------------------------------------------------- data


def dataset(count: int, cache: Path | None = None) -> list[Path]:
    """The benchmark instances, generated once and cached."""
    folder = cache or OUT / f"ingest-data-{count}"
    marker = folder / "READY"
    if not marker.exists():
        from radnode.synth.mr_study import generate_mr_study

        if folder.exists():
            shutil.rmtree(folder)
        slices = math.ceil(count / len(SERIES))
        t0 = time.perf_counter()
        print(f"generating {count} MR instances (256x256, 16-bit) in {folder} ...", file=sys.stderr)
        study = generate_mr_study(folder / "study", seed=2, series=SERIES, rows=256, columns=256, slices=slices)
        for extra in study.files[count:]:
            extra.unlink()
        marker.write_text(f"{count}\n")
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    files = sorted(folder.glob("study/*/*.dcm"), key=lambda p: (p.parent.name, int(p.stem)))
    if len(files) != count:
        raise SystemExit(f"{folder} holds {len(files)} files, expected {count}; delete it to regenerate")
    return files


# ----------------------------------------------------------------------- helpers


def wait_listening(port: int, sockets: int = 1, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``sockets`` LISTEN sockets are bound on ``port`` (SO_REUSEPORT
    listeners each have their own), then until a connect succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"receiver exited early with {proc.returncode}")
        if _listen_count(port) >= sockets:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening with {sockets} socket(s) after {timeout} s")


def wait_serving(log_path: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Wait until radnode logs that all its listener processes serve (they share one listening socket,
    so the port answers as soon as the first one binds it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited early with {proc.returncode}")
        if "dicom listener serving" in log_path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"radnode did not report serving after {timeout} s (log {log_path})")


def _listen_count(port: int) -> int:
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def count_files(folder: Path, pattern: str) -> int:
    return sum(1 for p in folder.rglob(pattern) if p.is_file())


def send(port: int, groups: list[list[Path]], called_ae: str) -> tuple[float, list[str]]:
    """Run one storescu per group at once; return (wall seconds, errors)."""
    env = dcmtk_env()
    procs = []
    t0 = time.perf_counter()
    for i, group in enumerate(groups):
        cmd = [tool("storescu"), "-aet", f"BENCH{i}", "-aec", called_ae, "-to", "30", "-ta", "60",
               "127.0.0.1", str(port), *map(str, group)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    errors: list[str] = []
    outs = []
    for p in procs:
        out, _ = p.communicate()
        outs.append((p.returncode, out))
    wall = time.perf_counter() - t0
    for rc, out in outs:
        bad = [ln for ln in out.splitlines() if ln.startswith(("E:", "F:"))]
        if rc != 0 or bad:
            errors.append(f"storescu rc={rc}: " + " | ".join(bad[:3]))
    return wall, errors


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of *pid* and its live descendants (from /proc; Linux only)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, pp in parents.items() if pp == p)
    return total


def split(files: list[Path], n: int) -> list[list[Path]]:
    return [files[i::n] for i in range(n)] if n > 1 else [files]


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------ runs


@dataclass
class Run:
    target: str
    senders: int
    round: int
    seconds: float
    received: int
    expected: int
    errors: list[str] = field(default_factory=list)
    #: radnode only: seconds from the last sender's exit (its association released) to the study's first job.
    start_latency: float | None = None
    #: CPU seconds (user + system) the receiver's processes used while the senders ran, per image.
    cpu_per_image: float | None = None

    @property
    def ok(self) -> bool:
        return self.received == self.expected and not self.errors


def run_storescp(files: list[Path], senders: int, work: Path, rnd: int, fork: bool) -> Run:
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="storescp-", dir=work))
    extra = ("+xa", "--fork") if fork else ("+xa",)
    proc = storescp_process(port, out, aet=AE_TITLE, extra_args=extra)
    try:
        wait_listening(port, proc=proc)
        time.sleep(0.3)  # as for radnode (the readiness probe's connection ends)
        cpu0 = process_tree_cpu(proc.pid)
        wall, errors = send(port, split(files, senders), AE_TITLE)
        cpu = None if fork else (process_tree_cpu(proc.pid) - cpu0) / len(files)  # forked children are gone
        time.sleep(0.2 if fork else 0)  # forked children may still be closing their last file
    finally:
        stop(proc)
    received = count_files(out, "*")
    # Kept until the end of the benchmark (see main): deleting a run's files just before the next run
    # makes that run's inode allocations scan the recently deleted inodes.
    name = "storescp --fork" if fork else "storescp"
    return Run(name, senders, rnd, wall, received, len(files), errors, cpu_per_image=cpu)


def radnode_name(processes: int, fsync: bool) -> str:
    return f"radnode p={processes} fsync={'on' if fsync else 'off'}"


def run_radnode(files: list[Path], senders: int, work: Path, rnd: int, processes: int, fsync: bool,
                log_dir: Path) -> Run:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="radnode-", dir=work))
    env = dict(os.environ)
    env.update({
        "RADNODE_DATA_DIR": str(data),
        "RADNODE_PORT": str(port),
        "RADNODE_AE_TITLE": AE_TITLE,
        "RADNODE_LISTENER__HOST": "127.0.0.1",
        "RADNODE_LISTENER__PROCESSES": str(processes),
        "RADNODE_LISTENER__FSYNC": "true" if fsync else "false",
        "RADNODE_LOGGING__LEVEL": "info",  # "dicom listener serving" says every listener process serves
    })
    exe = shutil.which("radnode")
    cmd = [exe, "listen"] if exe else [sys.executable, "-c", "from radnode.cli import main; main()", "listen"]
    log_path = log_dir / f"radnode-p{processes}-{'fsync' if fsync else 'nofsync'}-s{senders}-r{rnd}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            wait_listening(port, proc=proc)
            wait_serving(log_path, proc=proc)
            # The readiness probe's connection is torn down within ~50 ms; before that it still counts
            # against listener.max_associations_per_host (4), which four senders would hit.
            time.sleep(0.3)
            cpu0 = process_tree_cpu(proc.pid)
            wall, errors = send(port, split(files, senders), AE_TITLE)
            sent_at = time.time()
            cpu = (process_tree_cpu(proc.pid) - cpu0) / len(files)
            first_job = _first_job_created(data / "radnode.sqlite3", timeout=60.0)
        finally:
            stop(proc)
    received = count_files(data / "spool", "*.dcm") if (data / "spool").exists() else count_files(data, "*.dcm")
    if proc.returncode not in (0, -signal.SIGTERM):
        errors.append(f"radnode exited with {proc.returncode} (log {log_path})")
    latency = None if first_job is None else max(first_job - sent_at, 0.0)
    return Run(radnode_name(processes, fsync), senders, rnd, wall, received, len(files), errors, latency, cpu)


def _first_job_created(database: Path, timeout: float) -> float | None:
    """When the first job of the sent study was created (the node routes it once the study is complete)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if database.exists():
            try:
                with sqlite3.connect(database, timeout=5) as db:
                    row = db.execute("SELECT MIN(created_at) FROM jobs").fetchone()
                if row and row[0] is not None:
                    return float(row[0])
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    return None


# ----------------------------------------------------------------------- report


def summarize(runs: list[Run], mb_total: float, count: int) -> list[dict]:
    rows = []
    keys = []
    for r in runs:
        if (r.target, r.senders) not in keys:
            keys.append((r.target, r.senders))
    for target, senders in keys:
        rs = [r for r in runs if r.target == target and r.senders == senders]
        secs = [r.seconds for r in rs]
        med = statistics.median(secs)
        rows.append({
            "target": target,
            "senders": senders,
            "rounds": len(rs),
            "seconds_median": med,
            "seconds_all": secs,
            "images_per_s": count / med,
            "images_per_s_best": count / min(secs),
            "mb_per_s": mb_total / med,
            "cpu_ms_per_image": statistics.median(c) * 1e3 if (c := [r.cpu_per_image for r in rs if r.cpu_per_image is not None]) else None,
            "start_latency_median": statistics.median(lat) if (lat := [r.start_latency for r in rs if r.start_latency is not None]) else None,
            "lost_runs": [f"round {r.round}: {r.received}/{r.expected} {'; '.join(r.errors)}" for r in rs if not r.ok],
        })
    for row in rows:
        base = [b for b in rows if b["senders"] == row["senders"] and b["target"].startswith("storescp")]
        row["ratio"] = row["images_per_s"] / base[0]["images_per_s"] if base else None
        if len(base) > 1:
            row["ratio_vs"] = {b["target"]: row["images_per_s"] / b["images_per_s"] for b in base}
    return rows


def print_table(rows: list[dict], meta: dict) -> None:
    print()
    print(f"ingest benchmark — {meta['date']}")
    print(f"machine: {meta['cpus']} CPUs, {meta['platform']}, Python {meta['python']}")
    print(f"load average (1/5/15 min) before {meta['loadavg_before']}, after {meta['loadavg_after']} "
          "(other work on the machine skews the figures)")
    print(f"data: {meta['count']} MR instances 256x256 16-bit Explicit VR LE, {meta['mb']:.1f} MB "
          f"({meta['bytes_per_file']:.0f} bytes/file); {meta['rounds']} rounds, median shown")
    print()
    hdr = (f"{'senders':>7}  {'receiver':<26} {'images/s':>9} {'(best)':>8} {'MB/s':>7} {'ratio':>6} {'CPU ms':>6} "
           f"{'start s':>7}  {'s/run (all rounds)':<24} status")
    print(hdr)
    print("-" * len(hdr))
    last = None
    for r in rows:
        if last is not None and r["senders"] != last:
            print()
        last = r["senders"]
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        runs = " ".join(f"{s:.2f}" for s in r["seconds_all"])
        status = "ok" if not r["lost_runs"] else "LOST: " + " / ".join(r["lost_runs"])
        start = f"{r['start_latency_median']:.2f}" if r.get("start_latency_median") is not None else "-"
        cpu = f"{r['cpu_ms_per_image']:.2f}" if r.get("cpu_ms_per_image") is not None else "-"
        print(f"{r['senders']:>7}  {r['target']:<26} {r['images_per_s']:>9.0f} {r['images_per_s_best']:>8.0f} "
              f"{r['mb_per_s']:>7.1f} {ratio:>6} {cpu:>6} {start:>7}  {runs:<24} {status}")
    print()
    print("ratio = radnode images/s ÷ storescp images/s with the same number of senders "
          "(storescp --fork when senders > 1). storescp does not fsync.")
    print("CPU ms = the receiver's CPU (user + system, all its processes) per image while the senders ran "
          "(not measured for storescp --fork, whose children exit).")
    print("start s = from the last sender's exit (association released) to the study's first job in radnode's store "
          "(completeness by signal; the quiet period is the fallback).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=1000, help="instances sent per run")
    ap.add_argument("--processes", default="1",
                    help="radnode listener processes; a comma list (e.g. 1,2) measures each")
    ap.add_argument("--fsync", default="on,off",
                    help="radnode with fsync on (the default setting), off, or both (separate rows): on,off")
    ap.add_argument("--no-fsync", action="store_true", help="(kept for old command lines) same as --fsync on,off")
    ap.add_argument("--senders", default="1,4", help="comma list of parallel sender counts")
    ap.add_argument("--no-fork", action="store_true", help="storescp without --fork even with several senders")
    ap.add_argument("--data", type=Path, default=None, help="cache folder for the generated instances")
    ap.add_argument("--work", type=Path, default=None,
                    help="where receivers write (default: a temp dir under bench/out, same disk as the data)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = ap.parse_args(argv)

    for name in ("storescu", "storescp"):
        if not os.access(tool(name), os.X_OK):
            raise SystemExit(f"DCMTK {name} not found at {tool(name)} (apt-get install dcmtk)")
    files = dataset(args.count, args.data)
    total = sum(f.stat().st_size for f in files)
    mb = total / 1e6
    processes = [int(p) for p in str(args.processes).split(",") if p]
    senders_list = [int(s) for s in str(args.senders).split(",") if s]
    fsyncs = ["on", "off"] if args.no_fsync else [f for f in str(args.fsync).split(",") if f]
    configs = [(p, f == "on") for f in fsyncs for p in processes]

    OUT.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="ingest-run-", dir=args.work or OUT))
    runs: list[Run] = []
    try:
        for senders in senders_list:
            fork = senders > 1 and not args.no_fork
            for rnd in range(1, args.rounds + 1):
                r = run_storescp(files, senders, work, rnd, fork)
                runs.append(r)
                _progress(r)
                for p, fs in configs:
                    r = run_radnode(files, senders, work, rnd, p, fs, work)
                    runs.append(r)
                    _progress(r)
    finally:
        logs = [p for p in work.glob("*.log") if p.stat().st_size]
        if logs:
            keep = OUT / "ingest-logs"
            keep.mkdir(exist_ok=True)
            for p in logs:
                shutil.copy(p, keep / p.name)
            print(f"radnode wrote log output; copies in {keep}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "count": args.count,
        "mb": mb,
        "bytes_per_file": total / len(files),
        "rounds": args.rounds,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    rows = summarize(runs, mb, args.count)
    if args.json:
        print(json.dumps({"meta": meta, "results": rows, "runs": [asdict(r) for r in runs]}, indent=2))
    else:
        print_table(rows, meta)
    return 1 if any(not r.ok for r in runs) else 0


def _progress(r: Run) -> None:
    flag = "" if r.ok else f"  LOST {r.expected - r.received} {r.errors}"
    print(f"  [{r.senders} sender(s), round {r.round}] {r.target:<26} {r.seconds:6.2f} s "
          f"{r.expected / r.seconds:7.0f} img/s  received {r.received}/{r.expected}{flag}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

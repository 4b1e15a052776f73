"""Hot reload of the routing file.

Admins edit ``routing.yaml`` on a running node.  A bad edit must never take
routing down, so a changed file is validated in full and swapped in only if
valid; otherwise it is refused, its errors are logged as ``FILE:LINE:COLUMN``
and the rules already in force stay.  Accepted changes are logged as a short
summary (rules added/removed/changed by name, destinations changed) so the
audit trail shows who-changed-what without diffing files by hand.

Change detection uses mtime + size (cheap, every poll) and a content hash
(so touching a file or an editor's rewrite with identical bytes is a no-op).
Because mtime has coarse granularity on some file systems, a file whose
mtime is within :data:`_RACY_SECONDS` of our last read is re-hashed even if
its stat looks unchanged — otherwise a second write within the same tick
could go unnoticed forever.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from radnode.routing.rules import (
    DEFAULT_APPLICATIONS,
    KnownApplications,
    RoutingConfig,
    RoutingFileError,
    RoutingIssue,
    decode_rules,
    parse_rules,
)

log = structlog.get_logger(__name__)

_RACY_SECONDS = 2.0


@dataclass(frozen=True)
class ConfigDiff:
    """What changed between two routing configs, by name."""

    rules_added: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()
    rules_changed: tuple[str, ...] = ()
    rule_order_changed: bool = False
    destinations_added: tuple[str, ...] = ()
    destinations_removed: tuple[str, ...] = ()
    destinations_changed: tuple[str, ...] = ()
    defaults_changed: bool = False

    @property
    def empty(self) -> bool:
        """True when the configs are equivalent (e.g. only comments changed)."""
        return not any(
            (
                self.rules_added,
                self.rules_removed,
                self.rules_changed,
                self.rule_order_changed,
                self.destinations_added,
                self.destinations_removed,
                self.destinations_changed,
                self.defaults_changed,
            )
        )


def diff_configs(old: RoutingConfig, new: RoutingConfig) -> ConfigDiff:
    """Summarise the difference between two configs for the reload log."""
    old_rules = {r.name: r.model_dump(by_alias=True) for r in old.rules}
    new_rules = {r.name: r.model_dump(by_alias=True) for r in new.rules}
    common_old = [r.name for r in old.ordered_rules() if r.name in new_rules]
    common_new = [r.name for r in new.ordered_rules() if r.name in old_rules]
    old_dest = {k: v.model_dump() for k, v in old.destinations.items()}
    new_dest = {k: v.model_dump() for k, v in new.destinations.items()}
    return ConfigDiff(
        rules_added=tuple(n for n in new_rules if n not in old_rules),
        rules_removed=tuple(n for n in old_rules if n not in new_rules),
        rules_changed=tuple(n for n in new_rules if n in old_rules and old_rules[n] != new_rules[n]),
        rule_order_changed=common_old != common_new,
        destinations_added=tuple(n for n in new_dest if n not in old_dest),
        destinations_removed=tuple(n for n in old_dest if n not in new_dest),
        destinations_changed=tuple(n for n in new_dest if n in old_dest and old_dest[n] != new_dest[n]),
        defaults_changed=old.defaults != new.defaults,
    )


class RulesWatcher:
    """Keeps the routing rules in force, reloading the file when it changes.

    Use :meth:`poll` directly (tests, or a caller with its own loop) or
    :meth:`start`/:meth:`stop` for a daemon thread that polls every
    ``interval`` seconds.  :attr:`current` is safe to read from any thread;
    configs are immutable, so a reader keeps a consistent snapshot even if a
    reload happens while it evaluates.

    The initial load raises :class:`RoutingFileError`: with no previous rules
    to fall back on, starting with a broken file should fail loudly.
    """

    def __init__(
        self,
        path: str | Path,
        known_applications: KnownApplications = DEFAULT_APPLICATIONS,
        interval: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self._known = known_applications
        self._lock = threading.Lock()  # guards what readers see
        self._poll_lock = threading.Lock()  # serialises poll() (thread + manual calls)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            raw, stat_sig = self._read()
        except OSError as exc:
            issue = RoutingIssue(str(self.path), 1, 1, f"cannot read file: {exc.strerror or exc}")
            raise RoutingFileError([issue]) from None
        self._current = parse_rules(decode_rules(raw, str(self.path)), known_applications, file=str(self.path))
        self._stat_sig: tuple[int, int] | None = stat_sig
        self._read_at = time.time()
        self._hash = hashlib.sha256(raw).hexdigest()
        self._refused_hash: str | None = None
        self._missing_logged = False
        self._last_issues: tuple[RoutingIssue, ...] = ()
        self.generation = 0
        log.info("routing.rules_loaded", file=str(self.path), rules=len(self._current.rules), sha256=self._hash[:12])

    # -- public API ---------------------------------------------------------

    @property
    def current(self) -> RoutingConfig:
        """The rules in force (the last valid version of the file)."""
        with self._lock:
            return self._current

    @property
    def last_issues(self) -> tuple[RoutingIssue, ...]:
        """Errors of the most recent refused edit; empty once a valid file loads."""
        with self._lock:
            return self._last_issues

    def poll(self) -> bool:
        """Check the file once; return True if new rules were swapped in."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("routing.rules_file_missing", file=str(self.path), keeping="previous rules")
                self._missing_logged = True
            return False
        self._missing_logged = False
        sig = (st.st_mtime_ns, st.st_size)
        racy = st.st_mtime_ns / 1e9 >= self._read_at - _RACY_SECONDS
        if sig == self._stat_sig and not racy:
            return False
        try:
            raw, sig = self._read()
        except OSError as exc:
            log.warning("routing.rules_unreadable", file=str(self.path), error=str(exc))
            return False
        self._stat_sig = sig
        self._read_at = time.time()
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._hash:
            if self._refused_hash is not None:
                # The admin reverted the bad edit: the rules in force are the file again.
                log.info("routing.rules_edit_reverted", file=str(self.path))
                self._refused_hash = None
                with self._lock:
                    self._last_issues = ()
            return False
        if digest == self._refused_hash:
            return False  # already refused and logged; don't repeat every poll
        try:
            new = parse_rules(decode_rules(raw, str(self.path)), self._known, file=str(self.path))
        except RoutingFileError as exc:
            self._refused_hash = digest
            with self._lock:
                self._last_issues = tuple(exc.issues)
            for issue in exc.issues:
                log.error("routing.rules_invalid", issue=str(issue))
            log.error(
                "routing.reload_refused",
                file=str(self.path),
                errors=len(exc.issues),
                keeping="previous rules",
            )
            return False
        with self._lock:
            old = self._current
            self._current = new
            self._last_issues = ()
            self._hash = digest
            self._refused_hash = None
            self.generation += 1
        diff = diff_configs(old, new)
        log.info(
            "routing.rules_reloaded",
            file=str(self.path),
            sha256=digest[:12],
            rules=len(new.rules),
            rules_added=list(diff.rules_added),
            rules_removed=list(diff.rules_removed),
            rules_changed=list(diff.rules_changed),
            rule_order_changed=diff.rule_order_changed,
            destinations_added=list(diff.destinations_added),
            destinations_removed=list(diff.destinations_removed),
            destinations_changed=list(diff.destinations_changed),
            defaults_changed=diff.defaults_changed,
        )
        return True

    def start(self) -> None:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="radnode-routing-reload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the polling thread (no-op if it is not running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> RulesWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _read(self) -> tuple[bytes, tuple[int, int]]:
        """Read the file and the stat signature that goes with those bytes.

        Stat is taken before reading: if the file changes during the read,
        the next poll sees a newer signature and reads again.
        """
        st = os.stat(self.path)
        return self.path.read_bytes(), (st.st_mtime_ns, st.st_size)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the thread must survive surprises
                log.exception("routing.reload_failed", file=str(self.path))


__all__ = ["ConfigDiff", "RulesWatcher", "diff_configs"]

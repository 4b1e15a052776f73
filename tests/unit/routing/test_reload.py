"""Hot reload: valid edits swap in, invalid edits are refused and logged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from radnode.routing.reload import RulesWatcher, diff_configs
from radnode.routing.rules import RoutingFileError, parse_rules

V1 = """\
version: 1
destinations:
  pacs_main: {ae_title: PACS, host: 10.0.0.5, port: 104}
rules:
  - name: brain
    match: {modalities: MR}
    applications: [glioma]
  - name: head-ct
    match: {modalities: CT}
    applications: [hemorrhage]
"""

V2 = """\
version: 1
destinations:
  pacs_main: {ae_title: PACS, host: 10.0.0.7, port: 104}
  archive: {ae_title: ARCH, host: 10.0.0.8, port: 104}
rules:
  - name: brain
    match: {modalities: MR}
    applications: [glioma, metastasis]
  - name: pet
    match: {modalities: PT}
    applications: [metastasis]
"""

BROKEN = """\
version: 1
rules:
  - name: brain
    match: {modalities: MR}
    applications: [gliomma]
"""


def edit(path: Path, text: str) -> None:
    """Write and bump mtime so the change is visible even on coarse clocks."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(V1, encoding="utf-8")
    return path


def rule_names(watcher: RulesWatcher) -> list[str]:
    return [r.name for r in watcher.current.rules]


def test_initial_load_and_unchanged_poll(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    assert rule_names(watcher) == ["brain", "head-ct"]
    assert watcher.poll() is False
    os.utime(rules_file)  # touched, same content: no reload
    assert watcher.poll() is False
    assert watcher.generation == 0


def test_initial_invalid_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(RoutingFileError) as info:
        RulesWatcher(path)
    assert str(info.value.issues[0]).startswith(f"{path}:5:20: ")
    with pytest.raises(RoutingFileError):
        RulesWatcher(tmp_path / "absent.yaml")


def test_valid_edit_is_swapped_in_and_summarised(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    edit(rules_file, V2)
    with capture_logs() as logs:
        assert watcher.poll() is True
    assert rule_names(watcher) == ["brain", "pet"]
    assert watcher.generation == 1
    (event,) = [e for e in logs if e["event"] == "routing.rules_reloaded"]
    assert event["rules_added"] == ["pet"]
    assert event["rules_removed"] == ["head-ct"]
    assert event["rules_changed"] == ["brain"]
    assert event["destinations_added"] == ["archive"]
    assert event["destinations_changed"] == ["pacs_main"]
    assert event["destinations_removed"] == []
    assert watcher.poll() is False


def test_invalid_edit_is_refused_and_old_rules_stay(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    before = watcher.current
    edit(rules_file, BROKEN)
    with capture_logs() as logs:
        assert watcher.poll() is False
    assert watcher.current is before
    invalid = [e["issue"] for e in logs if e["event"] == "routing.rules_invalid"]
    assert len(invalid) == 1
    assert invalid[0].startswith(f"{rules_file}:5:20: ")
    assert "unknown application 'gliomma'" in invalid[0]
    assert any(e["event"] == "routing.reload_refused" and e["log_level"] == "error" for e in logs)
    assert [str(i) for i in watcher.last_issues] == invalid

    # The same broken content is not re-logged on every poll.
    with capture_logs() as logs:
        assert watcher.poll() is False
    assert not [e for e in logs if e["event"] == "routing.rules_invalid"]

    # Fixing the file swaps the fix in and clears the issues.
    edit(rules_file, V2)
    assert watcher.poll() is True
    assert rule_names(watcher) == ["brain", "pet"]
    assert watcher.last_issues == ()


def test_syntax_error_edit_keeps_old_rules(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    edit(rules_file, V1.replace("  - name: head-ct", "\t- name: head-ct"))
    with capture_logs() as logs:
        assert watcher.poll() is False
    assert rule_names(watcher) == ["brain", "head-ct"]
    (issue,) = [e["issue"] for e in logs if e["event"] == "routing.rules_invalid"]
    assert issue.startswith(f"{rules_file}:8:1: ") and "tab" in issue


def test_revert_of_bad_edit_is_noticed(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    edit(rules_file, BROKEN)
    watcher.poll()
    assert watcher.last_issues
    edit(rules_file, V1)
    with capture_logs() as logs:
        assert watcher.poll() is False  # the rules in force did not change
    assert watcher.last_issues == ()
    assert any(e["event"] == "routing.rules_edit_reverted" for e in logs)


def test_same_size_rewrite_within_mtime_tick_is_detected(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    st = rules_file.stat()
    # Same size and forced same mtime: only the content hash can tell.
    text = V1.replace("name: head-ct", "name: HEAD-CT")
    assert len(text) == len(V1)
    rules_file.write_text(text, encoding="utf-8")
    os.utime(rules_file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert watcher.poll() is True
    assert rule_names(watcher) == ["brain", "HEAD-CT"]


def test_deleted_file_keeps_rules(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    rules_file.unlink()
    with capture_logs() as logs:
        assert watcher.poll() is False
        assert watcher.poll() is False
    assert rule_names(watcher) == ["brain", "head-ct"]
    assert len([e for e in logs if e["event"] == "routing.rules_file_missing"]) == 1
    edit(rules_file, V2)
    assert watcher.poll() is True


def test_comment_only_edit_reloads_with_empty_diff(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file)
    edit(rules_file, "# a comment\n" + V1)
    assert watcher.poll() is True
    assert diff_configs(parse_rules(V1), watcher.current).empty


def test_diff_detects_priority_order_and_defaults() -> None:
    old = parse_rules(V1)
    new = parse_rules(V1.replace("version: 1\n", "version: 1\ndefaults: {multiple: false}\n"))
    diff = diff_configs(old, new)
    assert diff.defaults_changed and not diff.rules_changed and not diff.rule_order_changed
    swapped = parse_rules(V1.replace("  - name: head-ct\n", "  - name: head-ct\n    priority: 5\n"))
    diff = diff_configs(old, swapped)
    assert diff.rules_changed == ("head-ct",) and diff.rule_order_changed


def test_background_thread_picks_up_changes(rules_file: Path) -> None:
    watcher = RulesWatcher(rules_file, interval=0.02)
    with watcher:
        edit(rules_file, BROKEN)
        deadline = time.monotonic() + 10
        while not watcher.last_issues and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watcher.last_issues, "invalid edit not noticed"
        assert rule_names(watcher) == ["brain", "head-ct"]
        edit(rules_file, V2)
        deadline = time.monotonic() + 10
        while rule_names(watcher) != ["brain", "pet"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rule_names(watcher) == ["brain", "pet"]
    assert watcher._thread is None

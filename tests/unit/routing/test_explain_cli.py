"""`radnode routing explain` and `radnode classify` through the real console
script on a generated study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from radnode.synth.mr_study import generate_mr_study

REPO = Path(__file__).resolve().parents[3]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    return subprocess.run([sys.executable, "-m", "radnode.cli", *args], capture_output=True, text=True, env={**base, **(env or {})}, cwd=REPO)


def test_explain_names_rules_applications_and_series(tmp_path: Path) -> None:
    study = generate_mr_study(tmp_path / "study", seed=2, rows=32, columns=32, slices=4)
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "version: 1\n"
        "rules:\n"
        "  - name: manual-glioma\n"
        "    match: {called_ae: AI_GLIOMA, modalities: [MR]}\n"
        "    applications: [glioma]\n"
        "  - name: hemorrhage-ct\n"
        "    match: {modalities: [CT]}\n"
        "    applications: [hemorrhage]\n"
    )
    out = _run("routing", "explain", str(tmp_path / "study"), "--called-ae", "AI_GLIOMA", "--rules", str(rules), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["study_instance_uid"] == study.study_instance_uid
    assert data["rules"] == ["manual-glioma"]
    [app] = data["applications"]
    assert app["name"] == "glioma"
    assert {role: v["series_instance_uid"] for role, v in app["series"].items()} == {
        role: study.by_label(role).series_instance_uid for role in ("t1c", "flair", "t2", "t1")
    }
    labels = {s["series_instance_uid"]: s["label"] for s in data["series"]}
    assert all(labels[s.series_instance_uid] == s.label for s in study.series)

    text = _run("routing", "explain", str(tmp_path / "study"), "--rules", str(rules))
    assert text.returncode == 0, text.stderr
    assert "no application runs for this study" in text.stdout  # called AE RADNODE: no rule matches
    assert "NO called_ae" in text.stdout


def test_explain_reports_a_missing_role_and_a_bad_rules_file(tmp_path: Path) -> None:
    generate_mr_study(tmp_path / "study", seed=3, series=("t1", "t2", "t1c"), rows=32, columns=32, slices=4)
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\nrules:\n  - name: all\n    applications: [glioma]\n")
    out = _run("routing", "explain", str(tmp_path / "study"), "--rules", str(rules), "--json")
    assert out.returncode == 0, out.stderr
    [app] = json.loads(out.stdout)["applications"]
    # glioma is not installed yet in this checkout, or flair is missing: either way it cannot run.
    assert app["state"] in ("needs-input", "failed")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules:\n  - name: x\n    applications: [glioma]\n    stopp: true\n")
    out = _run("routing", "explain", str(tmp_path / "study"), "--rules", str(bad))
    assert out.returncode == 1
    assert f"{bad}:5:5:" in out.stderr

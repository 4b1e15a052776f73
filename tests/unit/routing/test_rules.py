"""Routing rules: schema errors with exact positions, evaluation semantics, CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from radnode.routing.rules import (
    DicomNode,
    RoutingConfig,
    RoutingFileError,
    RoutingIssue,
    StudyFacts,
    evaluate,
    load_rules,
    parse_rules,
)
from radnode.routing.rules_commands import format_decision, routing

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "routing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str, known: object = None) -> list[RoutingIssue]:
    path = write(tmp_path, text)
    with pytest.raises(RoutingFileError) as info:
        if known is None:
            load_rules(path)
        else:
            load_rules(path, known)  # type: ignore[arg-type]
    return info.value.issues


def one_error(tmp_path: Path, text: str, known: object = None) -> RoutingIssue:
    issues = errors_of(tmp_path, text, known)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def cfg(text: str) -> RoutingConfig:
    return parse_rules(textwrap.dedent(text).lstrip("\n"))


def facts(**kw: object) -> StudyFacts:
    base: dict[str, object] = {
        "study_instance_uid": "1.2.3",
        "modalities": frozenset({"MR"}),
        "study_description": "MR BRAIN W/O",
        "calling_ae": "PACS1",
        "called_ae": "RADNODE",
    }
    base.update(kw)
    return StudyFacts(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- validation


def test_example_file_is_valid() -> None:
    config = load_rules(REPO / "config" / "routing.yaml")
    assert len(config.rules) >= 5
    assert "pacs_main" in config.destinations


def test_issue_str_is_file_line_column(tmp_path: Path) -> None:
    issue = RoutingIssue("r.yaml", 3, 7, "boom")
    assert str(issue) == "r.yaml:3:7: boom"


def test_yaml_syntax_error_position(tmp_path: Path) -> None:
    issue = one_error(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            match: {modalities: [MR}
        """,
    )
    assert (issue.line, issue.column) == (4, 28)
    assert "YAML syntax error" in issue.message
    assert str(issue).startswith(f"{tmp_path / 'routing.yaml'}:4:28: ")


def test_tab_indentation_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\nrules:\n  - name: a\n\t  priority: 3\n", encoding="utf-8")
    with pytest.raises(RoutingFileError) as info:
        load_rules(path)
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (4, 1)
    assert "tab" in issue.message


def test_tab_after_colon_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("version: 1\nrules:\n  - name:\ta\n", encoding="utf-8")
    with pytest.raises(RoutingFileError) as info:
        load_rules(path)
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (3, 10)
    assert "tab" in issue.message


def test_duplicate_keys_are_reported_with_both_lines(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            priority: 1
            applications: [glioma]
            priority: 2
        destinations: {}
        rules: []
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(6, 5), (8, 1)]
    assert "duplicate key 'priority' (first defined on line 4)" in issues[0].message
    assert "duplicate key 'rules' (first defined on line 2)" in issues[1].message


def test_unknown_key_points_at_key_with_suggestion(tmp_path: Path) -> None:
    issue = one_error(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            match:
              modalites: [MR]
        """,
    )
    assert (issue.line, issue.column) == (5, 7)
    assert "unknown key 'modalites'; did you mean 'modalities'?" in issue.message
    assert issue.message.startswith("rules[0].match.modalites:")


def test_unknown_top_level_and_destination_keys(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        destinatons: {}
        destinations:
          pacs: {ae_title: PACS, host: h, port: 104, secure: true}
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(2, 1), (4, 46)]
    assert "did you mean 'destinations'" in issues[0].message
    assert "unknown key 'secure'" in issues[1].message


def test_tls_and_external_are_for_dicom_destinations(tmp_path: Path) -> None:
    """Issue 14: `tls: true` (DICOM TLS) and `external: true` (de-identified) on a DICOM destination; refused elsewhere."""
    issues = errors_of(
        tmp_path,
        """
        version: 1
        destinations:
          pacs: {ae_title: PACS, host: h, port: 104, tls: true, external: true}
          web: {url: "https://x/dicom-web", external: true}
        """,
    )
    assert len(issues) == 1 and "external: true is for DICOM destinations" in issues[0].message


def test_wrong_types_point_at_value(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        destinations:
          pacs: {ae_title: PACS, host: h, port: 70000}
        rules:
          - name: a
            priority: high
            stop: perhaps
            applications: glioma
        """,
    )
    got = {(i.line, i.column): i.message for i in issues}
    assert set(got) == {(3, 41), (6, 15), (7, 11), (8, 19)}
    assert "less than or equal to 65535" in got[(3, 41)]
    assert "valid integer" in got[(6, 15)] and "'high'" in got[(6, 15)]
    assert "valid boolean" in got[(7, 11)]
    assert got[(8, 19)].startswith("rules[0].applications:")


def test_missing_required_keys_point_at_parent(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        rules:
          - applications: [glioma]
          - name: b
        """,
    )
    got = {(i.line, i.column): i.message for i in issues}
    assert got == {
        (1, 1): "missing required key 'version'",
        (2, 5): "rules[0]: missing required key 'name'",
    }


def test_yaml_booleans_get_a_quoting_hint(tmp_path: Path) -> None:
    issue = one_error(
        tmp_path,
        """
        version: 1
        rules:
          - name: off
        """,
    )
    assert (issue.line, issue.column) == (3, 11)
    assert "got False" in issue.message and "quote" in issue.message


def test_wrong_version(tmp_path: Path) -> None:
    issue = one_error(tmp_path, "version: 2\n")
    assert (issue.line, issue.column) == (1, 10)
    assert "version" in issue.message


def test_bad_regex_is_reported_at_its_value(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            match:
              study_description: "(?i)brain("
              not:
                body_part: "[a-"
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(5, 26), (7, 20)]
    assert "invalid regular expression '(?i)brain('" in issues[0].message
    assert issues[1].message.startswith("rules[0].match.not.body_part: invalid regular expression")


def test_bad_trigger_and_modalities(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            match:
              trigger: [auto, sometimes]
              modalities: [MR, ""]
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(5, 23), (6, 24)]
    assert "'auto', 'manual' or 'pull'" in issues[0].message


def test_unknown_application(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            applications:
              - gliomma
              - name: glioma
              - name: spleen
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(5, 9), (7, 15)]
    assert "unknown application 'gliomma'; did you mean 'glioma'?" in issues[0].message
    assert "unknown application 'spleen'" in issues[1].message


def test_known_applications_from_caller(tmp_path: Path) -> None:
    text = """
        version: 1
        rules:
          - name: a
            applications: [spleen]
        """
    assert load_rules(write(tmp_path, text), {"spleen"}).rules[0].applications[0].name == "spleen"
    issue = one_error(tmp_path, text.replace("spleen", "glioma"), {"spleen"})
    assert (issue.line, issue.column) == (4, 20)


class GliomaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bias_field_correct: bool = False


@pytest.mark.parametrize("schema", [GliomaOptions, {"bias_field_correct": bool}])
def test_application_options_are_checked_against_schema(tmp_path: Path, schema: object) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            applications:
              - name: glioma
                options:
                  bias_field_correct: maybe
                  colour: red
        """,
        {"glioma": schema},
    )
    assert [(i.line, i.column) for i in issues] == [(7, 31), (8, 11)]
    assert "valid boolean" in issues[0].message
    assert "unknown key 'colour' (allowed: bias_field_correct)" in issues[1].message


def test_unknown_destinations(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        defaults:
          destinations: [pacs_mian]
        destinations:
          pacs_main: {ae_title: PACS, host: h, port: 104}
        rules:
          - name: a
            destinations: [return_to_sender, nowhere]
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(3, 18), (8, 38)]
    assert "unknown destination 'pacs_mian'; did you mean 'pacs_main'?" in issues[0].message
    assert "unknown destination 'nowhere'" in issues[1].message


def test_return_to_sender_is_reserved_and_names_are_checked(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        destinations:
          return_to_sender: {ae_title: X, host: h, port: 1}
          "bad name": {ae_title: X, host: h, port: 1}
        """,
    )
    assert [(i.line, i.column) for i in issues] == [(3, 3), (4, 3)]
    assert "built in" in issues[0].message
    assert "invalid name 'bad name'" in issues[1].message


def test_duplicate_rule_names(tmp_path: Path) -> None:
    issue = one_error(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
          - name: b
          - name: a
        """,
    )
    assert (issue.line, issue.column) == (5, 11)
    assert "duplicate rule name 'a' (first used on line 3)" in issue.message


def test_all_errors_reported_at_once_sorted(tmp_path: Path) -> None:
    issues = errors_of(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            priority: x
            applications: [nope]
            destinations: [nowhere]
          - name: b
            match: {institution: "("}
        """,
    )
    assert [i.line for i in issues] == [4, 5, 6, 8]


def test_empty_non_mapping_missing_and_non_utf8_files(tmp_path: Path) -> None:
    assert one_error(tmp_path, "").message.startswith("file is empty")
    assert "top level must be a mapping" in one_error(tmp_path, "- a\n").message
    with pytest.raises(RoutingFileError) as info:
        load_rules(tmp_path / "absent.yaml")
    assert "cannot read file" in info.value.issues[0].message
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\n# caf\xe9\n")
    with pytest.raises(RoutingFileError) as info:
        load_rules(bad)
    assert (info.value.issues[0].line, info.value.issues[0].column) == (2, 6)


def test_anchors_merge_keys_and_extension_keys(tmp_path: Path) -> None:
    text = """
        version: 1
        x-brain: &brain
          modalities: [MR]
          study_description: "(?i)brain"
        rules:
          - name: a
            match:
              <<: *brain
              modalities: CT
            applications: [glioma]
        """
    config = load_rules(write(tmp_path, text))
    assert config.rules[0].match is not None
    assert config.rules[0].match.modalities == ("CT",)  # explicit key overrides the merge
    assert config.rules[0].match.study_description == "(?i)brain"
    # An error inside the anchored block is reported where the block is written.
    issue = one_error(tmp_path, text.replace('"(?i)brain"', '"(?i)brain("'))
    assert (issue.line, issue.column) == (4, 22)
    assert issue.message.startswith("rules[0].match.study_description: invalid regular expression")


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["version: 1", "x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    for i in range(1, 8):
        lines.append(f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    issue = errors_of(tmp_path, "\n".join(lines) + "\n")[0]
    assert "too complex" in issue.message


# ---------------------------------------------------------------- evaluation


ROUTES = """
version: 1
destinations:
  pacs_main: {ae_title: PACS, host: 10.0.0.5, port: 104}
  archive: {ae_title: ARCH, host: 10.0.0.6, port: 11112}
rules:
  - name: low
    priority: 1
    match: {modalities: MR}
    applications: [metastasis]
  - name: high
    priority: 10
    match: {modalities: MR}
    applications:
      - name: glioma
        options: {bias_field_correct: true}
    destinations: [pacs_main]
  - name: also-high
    priority: 10
    match: {modalities: MR}
    applications:
      - name: glioma
        options: {bias_field_correct: false}
    destinations: [archive]
"""


def test_priority_then_file_order_and_merging() -> None:
    decision = evaluate(cfg(ROUTES), facts())
    assert decision.matched
    assert [o.rule for o in decision.matched_rules] == ["high", "also-high", "low"]
    assert decision.application_names == ("glioma", "metastasis")
    glioma = decision.applications[0]
    # Options from the first rule that named it, destinations merged.
    assert glioma.options == {"bias_field_correct": True}
    assert [d.name for d in glioma.destinations] == ["pacs_main", "archive"]
    assert glioma.rules == ("high", "also-high")
    assert glioma.destinations[0].node == DicomNode(ae_title="PACS", host="10.0.0.5", port=104)


def test_stop_skips_later_rules() -> None:
    config = cfg(ROUTES.replace("    destinations: [pacs_main]\n", "    destinations: [pacs_main]\n    stop: true\n"))
    decision = evaluate(config, facts())
    assert [o.rule for o in decision.matched_rules] == ["high"]
    assert decision.stopped_by == "high"
    skipped = {o.rule: o for o in decision.outcomes}["low"]
    assert skipped.matched and not skipped.applied
    assert "stopped evaluation" in skipped.note


def test_multiple_false_means_first_match_wins_unless_stop_false() -> None:
    config = cfg(ROUTES.replace("version: 1\n", "version: 1\ndefaults: {multiple: false}\n"))
    assert [o.rule for o in evaluate(config, facts()).matched_rules] == ["high"]
    config = cfg(
        ROUTES.replace("version: 1\n", "version: 1\ndefaults: {multiple: false}\n").replace(
            "    destinations: [pacs_main]\n", "    destinations: [pacs_main]\n    stop: false\n"
        )
    )
    assert [o.rule for o in evaluate(config, facts()).matched_rules] == ["high", "also-high"]


def test_options_are_copied_not_shared() -> None:
    config = cfg(ROUTES)
    decision = evaluate(config, facts())
    decision.applications[0].options["bias_field_correct"] = "mutated"  # type: ignore[index]
    assert evaluate(config, facts()).applications[0].options == {"bias_field_correct": True}


def test_no_match_means_nothing_runs() -> None:
    decision = evaluate(cfg(ROUTES), facts(modalities=frozenset({"CT"})))
    assert not decision.matched
    assert decision.applications == ()
    reasons = [c.reason for o in decision.outcomes for c in o.conditions]
    assert "study has CT, none of MR" in reasons


def test_rule_without_match_is_catch_all_and_can_swallow_everything() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: catch-all
            priority: 100
            applications: [hemorrhage]
            stop: true
          - name: brain
            match: {modalities: MR}
            applications: [glioma]
        """
    )
    decision = evaluate(config, facts())
    assert decision.application_names == ("hemorrhage",)
    assert decision.outcomes[0].conditions[0].reason == "no conditions: matches every study"


def test_fallback_only_when_nothing_else_matched() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: fallback
            priority: 100
            fallback: true
            applications: [hemorrhage]
          - name: brain
            match: {study_description: "(?i)brain"}
            applications: [glioma]
        """
    )
    decision = evaluate(config, facts())
    assert decision.application_names == ("glioma",)
    assert not decision.used_fallback
    assert {o.rule: o.note for o in decision.outcomes}["fallback"] == "fallback not used: another rule matched"

    decision = evaluate(config, facts(study_description="KNEE"))
    assert decision.application_names == ("hemorrhage",)
    assert decision.used_fallback and decision.matched


def test_exclusion_rule_without_applications_stops() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: ignore-teaching
            priority: 5
            match: {calling_ae: "TEACH*"}
            applications: []
            stop: true
          - name: brain
            applications: [glioma]
        """
    )
    decision = evaluate(config, facts(calling_ae="TEACHING1"))
    assert decision.matched and decision.applications == ()
    assert decision.stopped_by == "ignore-teaching"
    assert evaluate(config, facts()).application_names == ("glioma",)


def test_not_excludes_when_any_condition_holds() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: brain
            match:
              modalities: [MR]
              not: {study_description: "(?i)spine", body_part: "(?i)neck"}
            applications: [glioma]
        """
    )
    assert evaluate(config, facts()).matched
    spine = evaluate(config, facts(study_description="MR BRAIN AND SPINE"))
    assert not spine.matched
    cond = {c.condition: c for c in spine.outcomes[0].conditions}["not.study_description"]
    assert not cond.matched and cond.reason.startswith("excluded: 'MR BRAIN AND SPINE' matches")
    assert not evaluate(config, facts(body_part="NECK")).matched


def test_modalities_any_and_all() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: any
            match: {modalities: [ct, PT]}
            applications: [metastasis]
          - name: all
            match: {modalities_all: [CT, PT]}
            applications: [hemorrhage]
        """
    )
    assert evaluate(config, facts(modalities={"PT"})).application_names == ("metastasis",)
    both = evaluate(config, facts(modalities={"ct", "PT", "SR"}))
    assert both.application_names == ("metastasis", "hemorrhage")
    lacking = evaluate(config, facts(modalities={"PT"})).outcomes[1].conditions[0]
    assert lacking.reason == "study has PT, lacks CT"


def test_ae_globs_called_ae_and_triggers() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: r
            match:
              calling_ae: ["PACS1", "MODALITY*"]
              called_ae: RADNODE_GLIOMA
              trigger: [manual, pull]
            applications: [glioma]
        """
    )
    ok = facts(calling_ae="MODALITY_MR3 ", called_ae="RADNODE_GLIOMA", trigger="pull")
    decision = evaluate(config, ok)
    assert decision.matched
    reasons = {c.condition: c.reason for c in decision.outcomes[0].conditions}
    assert reasons["calling_ae"] == "'MODALITY_MR3' matches 'MODALITY*'"
    assert not evaluate(config, facts(calling_ae="modality_mr3", called_ae="RADNODE_GLIOMA", trigger="pull")).matched
    assert not evaluate(config, facts(calling_ae="PACS1", called_ae="RADNODE", trigger="pull")).matched
    assert not evaluate(config, facts(calling_ae="PACS1", called_ae="RADNODE_GLIOMA", trigger="auto")).matched
    assert not evaluate(config, facts(calling_ae=None, called_ae="RADNODE_GLIOMA", trigger="pull")).matched


def test_regex_conditions_and_missing_values() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: r
            match:
              body_part: "(?i)^head$|brain"
              institution: "General"
            applications: [glioma]
        """
    )
    assert evaluate(config, facts(body_part="HEAD", institution="City General Hospital")).matched
    # Case-sensitive unless (?i): "general" does not match "General".
    assert not evaluate(config, facts(body_part="HEAD", institution="city general")).matched
    missing = evaluate(config, facts(body_part=None, institution="General"))
    assert missing.outcomes[0].conditions[0].reason.startswith("study has no body part")


def test_disabled_rules_never_apply() -> None:
    config = cfg(
        """
        version: 1
        rules:
          - name: switched-off
            enabled: false
            applications: [glioma]
        """
    )
    decision = evaluate(config, facts())
    assert not decision.matched
    assert decision.outcomes[0].note == "disabled"


def test_defaults_destinations_and_return_to_sender_resolution() -> None:
    config = cfg(
        """
        version: 1
        defaults: {destinations: [return_to_sender, archive]}
        destinations:
          archive: {ae_title: ARCH, host: h, port: 11112}
        rules:
          - name: r
            applications: [glioma]
        """
    )
    sender = DicomNode(ae_title="PACS1", host="10.1.1.1", port=104)
    resolved = evaluate(config, facts(), senders={"PACS1": sender}).applications[0].destinations
    assert [(d.name, d.node) for d in resolved] == [("return_to_sender", sender), ("archive", config.destinations["archive"])]
    unknown = evaluate(config, facts(calling_ae="OTHER"), senders={"PACS1": sender}).applications[0].destinations
    assert unknown[0].symbolic and unknown[0].name == "return_to_sender"


def test_study_facts_hide_accession_and_check_trigger() -> None:
    f = facts(accession="ACC123")
    assert "ACC123" not in repr(f)
    with pytest.raises(ValueError):
        facts(trigger="sometimes")


def test_format_decision_explains() -> None:
    config = cfg(ROUTES.replace("    destinations: [pacs_main]\n", "    destinations: [pacs_main]\n    stop: true\n"))
    text = format_decision(evaluate(config, facts()))
    assert "Matched rules: high" in text
    assert "glioma: bias_field_correct=True" in text
    assert "pacs_main (PACS@10.0.0.5:104)" in text
    assert "~ low [priority 1]: matched, not applied" in text
    assert "stopped evaluation" in text
    nothing = format_decision(evaluate(config, facts(modalities={"CT"})))
    assert "No rule matched" in nothing and "NO modalities: study has CT, none of MR" in nothing


# ---------------------------------------------------------------- CLI


def test_cli_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path, ROUTES)
    result = CliRunner().invoke(routing, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "OK: 3 rules"


def test_cli_check_example_file() -> None:
    result = CliRunner().invoke(routing, ["check", str(REPO / "config" / "routing.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: ")


def test_cli_check_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        version: 1
        rules:
          - name: a
            applications: [spleen]
            match: {study_description: "("}
        """,
    )
    result = CliRunner().invoke(routing, ["check", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4:20: ")
    assert lines[1].startswith(f"{path}:5:32: ")
    # The same file passes when the caller knows 'spleen' ... except for the regex.
    result = CliRunner().invoke(routing, ["check", "--application", "spleen", str(path)])
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1

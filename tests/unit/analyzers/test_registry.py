"""The analyzer registry is the one source of applications, roles and option checks.

Routing, selection, pulls, the web forms and the worker all ask it; these
tests pin that each of them sees the same answer and the same error words.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from radnode.analyzers.registry import BUILTIN_APPLICATIONS, GLIOMA, HEMORRHAGE, OptionsError, Registry, parse_options
from radnode.model.analysis import AnalyzerSpec
from radnode.model.validation import describe, format_loc
from radnode.routing.rules import DEFAULT_APPLICATIONS
from radnode.settings import Settings

PLUGIN = "tests.support.analyzers:CountingAnalyzer"


def _registry(tmp_path: Path) -> Registry:
    return Registry.from_settings(Settings(data_dir=tmp_path, analyzers={"plugins": [PLUGIN]}))


def test_installed_and_declared_applications_are_told_apart(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    # Only applications with an analyzer are "known" (runnable) ...
    assert reg.known_applications() == frozenset(reg.names()) == {"glioma", "hemorrhage", "metastasis", "count-test"}
    # ... while routing and pulls may also name the declared built-ins.
    assert reg.declared_applications() == {"glioma", "count-test", "metastasis", "hemorrhage"}
    assert DEFAULT_APPLICATIONS == frozenset(BUILTIN_APPLICATIONS) == {"glioma", "metastasis", "hemorrhage"}


def test_roles_come_from_the_analyzer_or_its_declaration(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    assert reg.get("glioma").spec.required_roles == GLIOMA.required  # declared once, in the registry
    assert reg.roles("glioma") == GLIOMA
    assert reg.roles("hemorrhage") == HEMORRHAGE  # the analyzer's spec says what the declaration says
    assert reg.get("hemorrhage").spec.required_roles == HEMORRHAGE.required
    counting = reg.get("count-test").spec
    assert reg.roles("count-test").required == tuple(counting.required_roles)
    assert reg.roles("nonsense").required == ()


def test_one_option_check_and_one_wording(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    with pytest.raises(OptionsError) as err:
        reg.check_options("glioma", {"brain_extraction": "magic", "bogus": 1})
    message = str(err.value)
    assert message.startswith("invalid options for glioma: brain_extraction: Input should be 'deepbet' or 'template'")
    assert "; bogus: Extra inputs are not permitted" in message
    # The same words from the function the worker and `radnode analyze` call.
    with pytest.raises(OptionsError) as again:
        parse_options(reg.get("glioma").spec, {"brain_extraction": "magic", "bogus": 1})
    assert str(again.value) == message
    # Every built-in application checks its options the same way.
    with pytest.raises(OptionsError, match="invalid options for metastasis: anything: Extra inputs are not permitted"):
        reg.check_options("metastasis", {"anything": 1})
    # An application routing may name without an analyzer has nothing to check (its job records that).
    assert reg.check_options("not-installed", {"anything": 1}) is None
    assert reg.options_model("not-installed").model_fields == {}


def test_validation_errors_are_worded_once() -> None:
    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        port: int

    class Outer(BaseModel):
        peers: list[Inner]

    with pytest.raises(Exception) as err:
        Outer.model_validate({"peers": [{"port": "x"}]})
    assert describe(err.value) == "peers[0].port: Input should be a valid integer, unable to parse string as an integer"
    assert format_loc(("rules", 2, "match", "[key]")) == "rules[2].match (key)"
    spec = AnalyzerSpec(name="x", version="1", description="", required_roles=(), options=Inner)
    with pytest.raises(OptionsError, match=r"^invalid options for x: port: Field required$"):
        parse_options(spec, {})

"""packaging/prometheus: the alert rules pass ``promtool check rules`` and their
unit tests (``promtool test rules``: the silent agent, clock skew, expiring
certificate, refusal spike and database alerts fire when they should and not
before); every metric the rules and the Grafana dashboard name is one the
programs export.

promtool is Debian's (package ``prometheus``): scripts/setup.sh unpacks it into
``.venv/bin`` without installing the package. ``$PROMTOOL`` names another one.
Without any the promtool tests are skipped (the name check still runs)."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "packaging" / "prometheus"
PROMTOOL = (os.environ.get("PROMTOOL") or shutil.which("promtool")
            or shutil.which("promtool", path=str(pathlib.Path(sys.prefix) / "bin")))
EXPORTERS = (ROOT / "archive_server" / "metrics.py", ROOT / "agent" / "desk" / "metrics.py")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (scripts/setup.sh unpacks it; or set $PROMTOOL)")
@pytest.mark.parametrize("command", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_the_rules_and_their_tests_pass(command):
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *command], cwd=RULES, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _exported() -> set[str]:
    names: set[str] = set()
    for path in EXPORTERS:
        names |= set(re.findall(r'"(bildsluss_[a-z_]+)"', path.read_text()))
    return names


def _named(text: str) -> set[str]:
    text = re.sub(r"bildsluss_[a-z_]+\*", "", text)  # families named in comments (bildsluss_agent_*)
    return {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in re.findall(r"\bbildsluss_[a-z_]+", text)}


def test_rules_and_dashboard_name_only_exported_metrics():
    dashboard = json.loads((RULES / "grafana-dashboard.json").read_text())
    expressions = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    expressions += " " + dashboard["templating"]["list"][1]["definition"]
    exported = _exported()
    for where, text in (("alerts.yml", (RULES / "alerts.yml").read_text()), ("dashboard", expressions)):
        unknown = _named(text) - exported
        assert not unknown, f"{where} names metrics nobody exports: {sorted(unknown)}"

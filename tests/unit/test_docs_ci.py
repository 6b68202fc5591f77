"""docs/ci.md's jobs stay runnable: every YAML block parses, has the shape its CI system needs, and every kaudit
command line in it is accepted by kaudit's own argument parser with a bundled policy."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from kaudit._cli import build_parser
from kaudit.policy.load import available_policies
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "ci.md").read_text()
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, re.S)


def _kaudit_commands(text: str) -> list[list[str]]:
    """The kaudit invocations in a shell text, with continuation lines joined and variables made concrete."""
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for line in joined.splitlines():
        match = re.search(r"\bkaudit (scan .*)", line)
        if match:
            concrete = re.sub(r"\$\(\(?[^)]*\)\)?|\$\{\{[^}]*\}\}|\$\{?[A-Za-z_]+\}?", "X", match.group(1))
            commands.append(shlex.split(concrete.replace('"', "")))
    return commands


def _check(commands: list[list[str]]) -> None:
    assert commands
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert args.policy in available_policies() or args.policy == "X"
        formats = {spec.format for spec in args.output}
        assert {"sarif", "cyclonedx-json"} <= formats, argv


def test_github_actions_job() -> None:
    (workflow,) = [yaml.safe_load(b) for b in BLOCKS if "runs-on" in b]
    job: dict[str, Any] = workflow["jobs"]["gpu-kernel-gate"]
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("github/codeql-action/upload-sarif") for u in uses)
    assert any(u.startswith("actions/upload-artifact") for u in uses)
    assert workflow["permissions"]["security-events"] == "write"
    _check(_kaudit_commands("\n".join(step.get("run", "") for step in job["steps"])))


def test_gitlab_job() -> None:
    (pipeline,) = [yaml.safe_load(b) for b in BLOCKS if "stages:" in b]
    job = pipeline["kaudit-gate"]
    assert job["artifacts"]["reports"]["junit"] == "kaudit.xml" and "cyclonedx" in job["artifacts"]["reports"]
    assert job["stage"] in pipeline["stages"] and job["needs"] == ["build-image"]
    _check(_kaudit_commands("\n".join(job["script"])))


def test_tekton_task() -> None:
    (task,) = [yaml.safe_load(b) for b in BLOCKS if "tekton.dev" in b]
    assert task["apiVersion"] == "tekton.dev/v1" and task["kind"] == "Task"
    params = {p["name"] for p in task["spec"]["params"]}
    assert {"IMAGE", "POLICY", "FAIL_ON"} <= params
    used = set(re.findall(r"\$\(params\.([A-Z_]+)\)", yaml.safe_dump(task)))
    assert used <= params
    workspaces = {w["name"] for w in task["spec"]["workspaces"]}
    assert set(re.findall(r"\$\(workspaces\.([a-z-]+)\.", yaml.safe_dump(task))) <= workspaces
    (step,) = task["spec"]["steps"]
    assert step["securityContext"]["runAsNonRoot"] is True
    script = step["script"]
    for param in task["spec"]["params"]:  # as Tekton substitutes them, with the defaults
        script = script.replace(f"$(params.{param['name']})", param.get("default", "X"))
    _check(_kaudit_commands(script))

"""Policy and rule-catalog files: where they live, how they are read and checked.

Policies (``policies/*.yaml``) and the rule catalog (``rules/*.yaml``) ship with kaudit: from a checkout or an
editable install they are read from the repository, from a wheel from ``<prefix>/share/kaudit``. A policy is named
(``production``) or given as a path.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from pathlib import Path

from kaudit.archs import FleetArch
from kaudit.errors import UsageError
from kaudit.policy.model import Exemption, Mode, Policy, RuleInfo, RuleSetting, Severity, TrustedIdentity
from kaudit.policy.yamlfile import Fields, PolicyFileError, load

API_VERSION = "kaudit.dev/v1"
_RULE_ID = re.compile(r"^KA[0-9]{3}$")
_SEVERITIES = [s.value for s in Severity]
_MODES = [m.value for m in Mode]


def data_directory(name: str) -> Path:
    """``policies`` or ``rules``: beside the package in a checkout, else under the installation's data prefix."""
    beside = Path(__file__).resolve().parents[2] / name
    if beside.is_dir():
        return beside
    for prefix in (sysconfig.get_path("data"), sys.prefix):
        installed = Path(prefix) / "share" / "kaudit" / name
        if installed.is_dir():
            return installed
    raise UsageError(f"kaudit's {name}/ directory is missing from this installation; reinstall kaudit")


def load_catalog(directory: Path | None = None) -> dict[str, RuleInfo]:
    """Every rule of the catalog by id, in id order; checks that each names a check kaudit has."""
    from kaudit.rules import CHECKS

    directory = directory or data_directory("rules")
    rules: dict[str, RuleInfo] = {}
    for path in sorted(directory.glob("*.yaml")):
        source = str(path)
        fields = Fields(load(path.read_text(encoding="utf-8"), source), source, "a rule")
        fields.only("apiVersion", "kind", "id", "name", "title", "severity", "rationale", "remediation", "check",
                    "tags")  # fmt: skip
        _header(fields, "Rule")
        rule_id = fields.text("id")
        if not _RULE_ID.match(rule_id):
            raise fields.fail("id", f"rule id {rule_id!r} must look like KA101")
        if rule_id in rules:
            raise fields.fail("id", f"rule {rule_id} is also defined in {rules[rule_id].source}")
        check = fields.text("check")
        if check not in CHECKS:
            raise fields.fail("check", f"no check named {check!r} (known: {', '.join(sorted(CHECKS))})")
        rules[rule_id] = RuleInfo(rule_id, fields.text("name"), fields.text("title"),
                                  Severity(fields.choice("severity", _SEVERITIES)), fields.text("rationale"),
                                  fields.text("remediation"), check, fields.texts("tags"), source)  # fmt: skip
    return dict(sorted(rules.items()))


def available_policies() -> dict[str, Path]:
    return {path.stem: path for path in sorted(data_directory("policies").glob("*.yaml"))}


def resolve_policy(name_or_path: str) -> Path:
    """A bundled policy by name, or a policy file by path."""
    if os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"policy file {name_or_path} does not exist")
        return path
    policies = available_policies()
    if name_or_path not in policies:
        raise UsageError(f"no bundled policy {name_or_path!r}; bundled: {', '.join(policies)}, or give a file path")
    return policies[name_or_path]


def load_policy(path: Path, catalog: dict[str, RuleInfo]) -> Policy:
    """Read and check the policy in ``path`` against ``catalog``; errors carry the file and line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read policy {path}: {exc}") from exc
    fields = Fields(load(text, source), source, "a policy")
    fields.only("apiVersion", "kind", "name", "description", "fleet", "signers", "registries", "defaults", "rules",
                "exemptions", "admission", "trust-config", "attestation-signers")  # fmt: skip
    admission = Fields(fields.mapping_of("admission"), source, "admission", fields.mapping.line_of("admission"))
    admission.only("exempt-namespaces", "missing-report")
    _header(fields, "Policy")
    fleet = Fields(fields.mapping_of("fleet"), source, "fleet", fields.mapping.line_of("fleet"))
    fleet.only("archs")
    archs = []
    for text_arch in fleet.texts("archs"):
        try:
            archs.append(FleetArch.parse(text_arch))
        except ValueError as exc:
            raise fleet.fail("archs", str(exc)) from exc
    signers = _signers(fields, "signers", source)
    attestation_signers = _signers(fields, "attestation-signers", source)
    defaults = Fields(fields.mapping_of("defaults"), source, "defaults", fields.mapping.line_of("defaults"))
    defaults.only("mode", "fail-on")
    settings: dict[str, RuleSetting] = {}
    rules = fields.mapping_of("rules")
    for rule_id in rules:
        if rule_id not in catalog:
            raise PolicyFileError(source, rules.line_of(rule_id), f"unknown rule {rule_id!r}; see `kaudit policy list`")
        setting = Fields(rules[rule_id], source, f"rule {rule_id}", rules.line_of(rule_id))
        setting.only("mode", "severity")
        severity = setting.choice("severity", [*_SEVERITIES, "default"], "default")
        settings[rule_id] = RuleSetting(Mode(setting.choice("mode", _MODES, "enforce")),
                                        None if severity == "default" else Severity(severity))  # fmt: skip
    exemptions = []
    for item, line in fields.items("exemptions"):
        exemption = Fields(item, source, "an exemption", line)
        exemption.only("rule", "paths", "images", "reason", "expires")
        rule_id = exemption.text("rule")
        if rule_id != "*" and rule_id not in catalog:
            raise exemption.fail("rule", f"unknown rule {rule_id!r} in an exemption")
        if "expires" not in exemption.mapping:
            raise exemption.fail(None, "an exemption needs an expiry date ('expires: YYYY-MM-DD')")
        exemptions.append(Exemption(rule_id, exemption.text("reason"), exemption.texts("paths"),
                                    exemption.texts("images"), exemption.day("expires")))  # fmt: skip
    return Policy(
        name=fields.text("name"),
        description=fields.optional_text("description") or "",
        fleet_archs=tuple(archs),
        trusted_identities=tuple(signers),
        attestation_signers=tuple(attestation_signers),
        trust_config=_relative_to(path, fields.optional_text("trust-config")),
        allowed_registries=fields.texts("registries"),
        default_mode=Mode(defaults.choice("mode", _MODES, "enforce")),
        rules=settings,
        exemptions=tuple(exemptions),
        fail_on=Severity(defaults.choice("fail-on", _SEVERITIES, "high")),
        exempt_namespaces=admission.texts("exempt-namespaces"),
        missing_report=Mode(admission.choice("missing-report", ["enforce", "warn", "audit"], "enforce")),
        source=source,
    )


def _signers(fields: Fields, key: str, source: str) -> list[TrustedIdentity]:
    signers = []
    for item, line in fields.items(key):
        signer = Fields(item, source, f"an entry of {key}", line)
        signer.only("issuer", "subject")
        signers.append(TrustedIdentity(signer.text("issuer"), signer.text("subject")))
    return signers


def _relative_to(policy: Path, target: str | None) -> str | None:
    """A path written in a policy, relative to the policy's directory."""
    return None if target is None else str(policy.parent / target)


def _header(fields: Fields, kind: str) -> None:
    if fields.mapping.get("apiVersion") != API_VERSION:
        raise fields.fail("apiVersion", f"apiVersion must be {API_VERSION}")
    if fields.mapping.get("kind") != kind:
        raise fields.fail("kind", f"kind must be {kind}")

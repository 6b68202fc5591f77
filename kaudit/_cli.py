"""The ``kaudit`` command line: argument parsing and wiring only; the work is in :mod:`kaudit.scan`.

Exit codes: 0 success, 2 usage or scan error (a path that cannot be read, or with ``--strict`` any
problem met while scanning).
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaudit import __version__
from kaudit.errors import Error, UsageError
from kaudit.formats import FORMATS, Format, format_class
from kaudit.inventory import FindingKind, ScanReport

if TYPE_CHECKING:
    from kaudit.image_scan import ImageScanOptions
    from kaudit.policy.model import Policy, PolicyResult, RuleInfo, Severity, TrustedIdentity
    from kaudit.signing.attestation import Found
    from kaudit.sources.registry import RegistryClient

EXIT_OK = 0
EXIT_GATE = 1
"""``--policy`` found enforced findings at or above ``--fail-on`` (or ``policy validate`` found an invalid file)."""
EXIT_ERROR = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


@dataclass(frozen=True)
class OutputSpec:
    """One ``-o FORMAT[=FILE]``; ``path`` ``None`` means standard output."""

    format: str
    path: str | None


def parse_output(value: str) -> OutputSpec:
    name, _, path = value.partition("=")
    if name not in FORMATS:
        raise argparse.ArgumentTypeError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    if _ and not path:
        raise argparse.ArgumentTypeError(f"-o {value}: a file name must follow '='")
    return OutputSpec(name, path or None)


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kaudit", description="Inventory and audit GPU device code.")
    parser.add_argument("--version", action="version", version=f"kaudit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    scan = commands.add_parser("scan", help="inventory GPU device code")
    targets = scan.add_subparsers(dest="target", required=True, parser_class=_Parser)
    path = targets.add_parser(
        "path",
        help="scan files or directory trees (rootfs, site-packages, wheels)",
        description="Find GPU device code by content in files, directory trees, wheels and static archives.",
    )
    path.add_argument("paths", nargs="+", metavar="PATH", help="a file or directory to scan")
    _common_scan_options(path)
    image = targets.add_parser(
        "image",
        help="scan a container image, layer by layer",
        description="Inventory the GPU device code of a container image, layer by layer, with the packages that "
        "installed it and the runtime kernel caches it carries. REF is a registry reference "
        "(host[:port]/repo:tag or ...@sha256:...), oci:DIR[:TAG], docker-archive:FILE or dir:PATH.",
    )
    image.add_argument("reference", metavar="REF", help="the image to scan")
    _registry_options(image)
    image.add_argument(
        "--all-layers", action="store_true", help="also report files that a later layer deleted or replaced"
    )
    image.add_argument(
        "--max-layer-size",
        type=_positive_int,
        metavar="BYTES",
        help="stop reading a layer after this many uncompressed bytes (default 256 GiB; a tar bomb ends here)",
    )
    _common_scan_options(image, jobs_help="walk layers in N worker processes (default: the CPUs available)")

    policy = commands.add_parser("policy", help="the rule catalog and policies")
    actions = policy.add_subparsers(dest="action", required=True, parser_class=_Parser)
    actions.add_parser("list", help="list the rules and the bundled policies")
    explain = actions.add_parser("explain", help="show one rule: rationale, remediation, how policies set it")
    explain.add_argument("rule", metavar="RULE", help="a rule id such as KA101")
    validate = actions.add_parser("validate", help="check a policy file; errors carry line numbers")
    validate.add_argument("file", metavar="FILE", help="the policy YAML file")

    sign = commands.add_parser("sign", help="sign what kaudit attests")
    sign_targets = sign.add_subparsers(dest="target", required=True, parser_class=_Parser)
    sign_cache = sign_targets.add_parser(
        "cache", help="sign a kernel cache directory's manifest of file digests (OpenSSF model-signing format)"
    )
    sign_cache.add_argument("directory", metavar="DIR", help="the cache directory (Triton, Kernel Hub, ...)")
    sign_cache.add_argument("--key", required=True, metavar="KEY.pem", help="EC private key (PEM, unencrypted)")
    sign_cache.add_argument(
        "--signature", metavar="FILE", help="where to write the bundle (default DIR/kaudit-cache.sig)"
    )
    attest = commands.add_parser(
        "attest",
        help="scan an image and attach a signed attestation of its kernel inventory to it in its registry",
        description="Scan REF (a registry reference), wrap its kernel inventory in an in-toto statement, sign it "
        "(a local EC key, or attach a bundle signed keylessly elsewhere) and push it as an OCI 1.1 artifact that "
        "refers to the image (the referrers API, or the referrers tag schema sha256-<hex>).",
    )
    attest.add_argument("reference", metavar="REF", help="the image, in its registry")
    how = attest.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", metavar="KEY.pem", help="sign with this EC private key (air-gapped clusters)")
    how.add_argument("--bundle", metavar="FILE", help="attach this Sigstore bundle (e.g. signed keylessly in CI "
                     "over the statement --statement-out wrote)")  # fmt: skip
    how.add_argument("--keyless", action="store_true", help="sign with Sigstore (needs the network and an OIDC "
                     "identity: --identity-token or ambient CI credentials)")  # fmt: skip
    how.add_argument("--statement-out", metavar="FILE", help="only write the statement to sign; push nothing")
    attest.add_argument("--identity-token", metavar="JWT", help="with --keyless: the OIDC identity token")
    attest.add_argument("--trust-config", metavar="FILE",
                        help="with --keyless: a private Sigstore deployment's ClientTrustConfig")  # fmt: skip
    _registry_options(attest)
    verify = commands.add_parser("verify", help="verify what kaudit or upstream signed")
    verify_targets = verify.add_subparsers(dest="target", required=True, parser_class=_Parser)
    verify_image = verify_targets.add_parser(
        "image", help="find and verify kaudit attestations and cosign v3 signatures of an image in its registry"
    )
    verify_image.add_argument("reference", metavar="REF")
    verify_image.add_argument("--key", metavar="PUB.pem", help="verify with this EC public key")
    verify_image.add_argument("--identity", help="keyless: the signer's certificate identity (a glob, full match)")
    verify_image.add_argument("--issuer", help="keyless: the signer's OIDC issuer (a glob, full match)")
    verify_image.add_argument("--policy", metavar="NAME|FILE", help="trust this policy's signers, then judge the "
                              "attested inventory by its rules (exit 1 when it fails)")  # fmt: skip
    verify_image.add_argument("--trust-config", metavar="FILE", help="keyless: a Sigstore trusted_root.json")
    _registry_options(verify_image)
    verify_cache = verify_targets.add_parser("cache", help="verify a signed kernel cache directory, file by file")
    verify_cache.add_argument("directory", metavar="DIR")
    verify_cache.add_argument("--signature", metavar="FILE", help="the bundle (default DIR/kaudit-cache.sig)")
    verify_cache.add_argument("--key", metavar="PUB.pem", help="verify with this EC public key (key-signed caches)")
    verify_cache.add_argument("--identity", help="keyless: the signer's certificate identity (a glob, full match)")
    verify_cache.add_argument("--issuer", help="keyless: the signer's OIDC issuer (a glob, full match)")
    verify_cache.add_argument("--policy", metavar="NAME|FILE", help="keyless: trust the signers of this policy")
    verify_cache.add_argument(
        "--trust-config", metavar="FILE", help="keyless: a Sigstore trusted_root.json or ClientTrustConfig"
    )

    webhook = commands.add_parser("webhook", help="the validating admission webhook")
    webhook_actions = webhook.add_subparsers(dest="action", required=True, parser_class=_Parser)
    serve = webhook_actions.add_parser(
        "serve",
        help="run the webhook for development (Flask's server; production runs gunicorn, see docs/webhook.md)",
    )
    serve.add_argument("--policy", default="production", metavar="NAME|FILE", help="the policy (default production)")
    serve.add_argument("--reports", required=True, metavar="DIR", help="the report store: sha256-<hex>.json files")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_positive_int, default=8443, help="port (default 8443)")
    serve.add_argument("--cert", help="TLS certificate (PEM); with --key, serve HTTPS (the API server needs it)")
    serve.add_argument("--key", help="TLS private key (PEM)")
    return parser


def _registry_options(parser: argparse.ArgumentParser) -> None:
    """How to reach an image: the platform, the registry's transport and credentials, the layer cache."""
    parser.add_argument(
        "--platform", default="linux/amd64", help="platform to pick from an index (default linux/amd64)"
    )
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                        help="talk plain HTTP to this registry (may repeat); all others use HTTPS")  # fmt: skip
    parser.add_argument("--username", help="registry user name (the password is read from standard input)")
    parser.add_argument("--password-stdin", action="store_true", help="read the registry password from standard input")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the per-layer result cache")
    parser.add_argument("--cache-dir", help="directory of the per-layer result cache (default ~/.cache/kaudit/layers)")


def _common_scan_options(
    parser: argparse.ArgumentParser,
    jobs_help: str = "parse files in N worker processes (default: the CPUs available; 1: in this process)",
) -> None:
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        type=parse_output,
        metavar="FORMAT[=FILE]",
        help=f"output format ({', '.join(FORMATS)}), to FILE or standard output; may repeat (default: table)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 2 when anything could not be fully read")
    parser.add_argument(
        "--policy",
        metavar="NAME|FILE",
        help="evaluate a policy (production, experimental, or a policy file) and gate on its findings",
    )
    parser.add_argument(
        "--merge-into",
        metavar="SBOM.json",
        help="with -o cyclonedx-json: add kaudit's components to this CycloneDX JSON SBOM (e.g. Syft's), linking "
        "to its package components by purl instead of duplicating them",
    )
    parser.add_argument(
        "--fail-on",
        choices=("critical", "high", "medium", "low", "info"),
        help="exit 1 when an enforced finding is at or above this severity (default: the policy's fail-on)",
    )
    parser.add_argument("-j", "--jobs", type=_positive_int, metavar="N", help=jobs_help)
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bars on standard error (auto: only on a terminal)",
    )


def _return_freed_memory() -> None:
    """Have glibc give every buffer of 256 KiB or more back to the system when it is freed.

    By default glibc raises its mmap threshold after the first large free and then serves decompressed payloads
    (up to tens of MB each) from a heap that fragments: a worker walking libtorch_cuda grew to 229 MiB with it,
    and stays under 100 MiB without (docs/performance.md)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: nothing to tune
    m_mmap_threshold = -3
    mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(256 * 1024))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _return_freed_memory()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        if args.command == "scan" and args.target == "path":
            return _scan_path(args)
        if args.command == "scan" and args.target == "image":
            return _scan_image(args)
        if args.command == "policy":
            return _policy_command(args)
        if args.command == "webhook":
            return _webhook_serve(args)
        if args.command == "attest":
            return _attest(args)
        if args.command == "verify" and args.target == "image":
            return _verify_image(args)
        if args.command in ("sign", "verify"):
            return _cache_signature(args)
        raise UsageError(f"unknown command {args.command!r}")
    except Error as exc:
        print(f"kaudit: error: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("kaudit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``kaudit … | head``): stop quietly, as shell tools do on SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _scan_path(args: argparse.Namespace) -> int:
    from kaudit.scan import Scanner, ScanOptions

    outputs = _outputs(args)
    gate = _Gate.from_args(args, outputs)
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    with _progress(show_progress, args.paths, force=args.progress == "always") as advance:
        report = Scanner(ScanOptions(jobs=args.jobs)).scan_paths(args.paths, progress=advance)
    result = gate.evaluate(report)
    for spec in outputs:
        _write(spec, report, result, args.merge_into)
    unreadable_roots = [f for f in report.findings if f.path in args.paths and f.kind is FindingKind.UNREADABLE]
    if unreadable_roots or (args.strict and report.findings):
        return EXIT_ERROR
    return gate.exit_code(result)


def _outputs(args: argparse.Namespace) -> list[OutputSpec]:
    outputs: list[OutputSpec] = args.output or [OutputSpec("table", None)]
    if sum(1 for o in outputs if o.path is None) > 1:
        raise UsageError("only one -o may write to standard output; give the others a file (-o json=FILE)")
    return outputs


def _image_options(args: argparse.Namespace) -> ImageScanOptions:
    from kaudit.image_scan import ImageScanOptions
    from kaudit.layer_cache import default_directory
    from kaudit.sources.interface import Platform
    from kaudit.sources.registry import Credentials
    from kaudit.walk.layers import Limits

    credentials = None
    if args.password_stdin or args.username:
        if not (args.password_stdin and args.username):
            raise UsageError("--username and --password-stdin go together")
        password = sys.stdin.readline().rstrip("\r\n")
        credentials = Credentials(args.username, password)
    max_layer = getattr(args, "max_layer_size", None)
    return ImageScanOptions(
        limits=Limits(max_layer_bytes=max_layer) if max_layer else Limits(),
        platform=Platform.parse(args.platform),
        all_layers=getattr(args, "all_layers", False),
        jobs=getattr(args, "jobs", None),
        cache_dir=None if args.no_cache else (args.cache_dir or default_directory()),
        insecure_registries=frozenset(args.insecure_registry),
        credentials=credentials,
    )


def _scan_image(args: argparse.Namespace) -> int:
    from kaudit.image_scan import scan_image

    outputs = _outputs(args)
    gate = _Gate.from_args(args, outputs)
    options = _image_options(args)
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    with _layer_progress(show_progress, force=args.progress == "always") as advance:
        report = scan_image(args.reference, options, progress=advance)
    result = gate.evaluate(report)
    for spec in outputs:
        _write(spec, report, result, args.merge_into)
    return EXIT_ERROR if args.strict and report.findings else gate.exit_code(result)


@contextmanager
def _layer_progress(enabled: bool, force: bool) -> Iterator[Callable[[int, int, int], None] | None]:
    """One rich progress bar per layer, on standard error."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    tasks: dict[int, TaskID] = {}
    with Progress(
        TextColumn("layer {task.fields[layer]}"),
        BarColumn(),
        DownloadColumn(),
        console=Console(stderr=True, force_terminal=force or None),
        transient=True,
    ) as progress:

        def advance(layer: int, done: int, total: int) -> None:
            if layer not in tasks:
                tasks[layer] = progress.add_task("layer", total=total or None, layer=layer)
            progress.update(tasks[layer], completed=done)

        yield advance


@dataclass
class _Gate:
    """The policy a scan is judged by (``--policy``), and the threshold that fails it (``--fail-on``)."""

    policy: Policy | None
    catalog: dict[str, RuleInfo]
    threshold: Severity | None

    @classmethod
    def from_args(cls, args: argparse.Namespace, outputs: list[OutputSpec]) -> _Gate:
        """Loaded before the scan starts, so a bad policy fails at once."""
        if args.merge_into and not any(spec.format == "cyclonedx-json" for spec in outputs):
            raise UsageError("--merge-into goes with -o cyclonedx-json")
        needing = [spec.format for spec in outputs if format_class(spec.format).needs_policy]
        if args.policy is None:
            if needing or args.fail_on:
                what = f"-o {needing[0]}" if needing else "--fail-on"
                raise UsageError(f"{what} needs a policy: add --policy production (or experimental, or a file)")
            return cls(None, {}, None)
        from kaudit.policy.load import load_catalog, load_policy, resolve_policy
        from kaudit.policy.model import Severity

        catalog = load_catalog()
        policy = load_policy(resolve_policy(args.policy), catalog)
        return cls(policy, catalog, Severity(args.fail_on) if args.fail_on else policy.fail_on)

    def evaluate(self, report: ScanReport) -> PolicyResult | None:
        if self.policy is None:
            return None
        from kaudit.policy.engine import evaluate

        return evaluate(report, self.policy, self.catalog)

    def exit_code(self, result: PolicyResult | None) -> int:
        if result is None or self.threshold is None:
            return EXIT_OK
        failing = result.failing(self.threshold)
        if failing:
            print(f"kaudit: policy {result.policy.name}: {len(failing)} enforced finding(s) at or above "
                  f"{self.threshold.value}", file=sys.stderr)  # fmt: skip
            return EXIT_GATE
        return EXIT_OK


def _signers(args: argparse.Namespace, images: bool = False) -> tuple[list[TrustedIdentity], str | None]:
    """The trusted signers and trust root of a verify command (--identity/--issuer, --policy, --trust-config)."""
    from kaudit.policy.model import TrustedIdentity

    if args.key and (args.identity or args.issuer or args.policy):
        raise UsageError("--key verifies key-signed bundles; --identity/--issuer/--policy keyless ones: choose one")
    signers: list[TrustedIdentity] = []
    trust_config = args.trust_config
    if args.identity or args.issuer:
        if not (args.identity and args.issuer):
            raise UsageError("--identity and --issuer go together")
        signers.append(TrustedIdentity(args.issuer, args.identity))
    if args.policy:
        from kaudit.policy.load import load_catalog, load_policy, resolve_policy

        policy = load_policy(resolve_policy(args.policy), load_catalog())
        signers += policy.image_signers if images else policy.trusted_identities
        trust_config = trust_config or policy.trust_config
    return signers, trust_config


def _registry_client(
    args: argparse.Namespace, options: ImageScanOptions, push: bool = False
) -> tuple[RegistryClient, str]:
    """A client for REF's repository and the digest of the platform image REF names."""
    from kaudit.image_scan import open_source
    from kaudit.sources.registry import Reference, RegistryClient, RegistrySource

    source = open_source(args.reference, options)
    if not isinstance(source, RegistrySource):
        raise UsageError(f"{args.reference}: attestations live in a registry; give a registry reference")
    try:
        digest = source.resolve(options.platform).manifest_digest
    finally:
        source.close()
    reference = Reference.parse(args.reference.removeprefix("registry:"))
    insecure = reference.registry in options.insecure_registries
    return RegistryClient(reference, insecure=insecure, credentials=options.credentials, push=push), digest


def _attest(args: argparse.Namespace) -> int:
    from kaudit.image_scan import scan_image
    from kaudit.signing import attestation, dsse

    options = _image_options(args)
    report = scan_image(args.reference, options)
    statement = attestation.statement(report)
    if args.statement_out:
        with open(args.statement_out, "w", encoding="utf-8") as handle:
            json.dump(statement, handle, sort_keys=True)
        subject = report.image.manifest_digest if report.image else "?"
        print(f"wrote the statement for {subject} to {args.statement_out}; sign it (DSSE, payload type "
              f"{dsse.PAYLOAD_TYPE}) and attach it with --bundle")  # fmt: skip
        return EXIT_OK
    if args.key:
        bundle = dsse.sign_with_key(statement, _read(args.key))
    elif args.keyless:
        bundle = dsse.sign_keyless(statement, args.identity_token, args.trust_config)
    else:
        bundle = dsse.parse_bundle(_read(args.bundle), args.bundle)
        signed_subjects = attestation.subjects(bundle)
        if statement["subject"][0]["digest"]["sha256"] not in signed_subjects:
            raise UsageError(f"{args.bundle} attests {', '.join(signed_subjects) or 'nothing'}, not this image")
    client, _resolved = _registry_client(args, options, push=True)
    digest = statement["subject"][0]["digest"]["sha256"]
    digest = f"sha256:{digest}"  # what was scanned and signed, even if the tag has moved since
    artifact = attestation.attach(client, digest, bundle, attestation.PREDICATE_TYPE)
    print(f"attached attestation {artifact} to {args.reference.split('@')[0]}@{digest}")
    return EXIT_OK


def _verify_image(args: argparse.Namespace) -> int:
    from kaudit.signing import attestation

    signers, trust_config = _signers(args, images=True)
    client, digest = _registry_client(args, _image_options(args))
    found = attestation.verify_image(client, digest, public_key_pem=_read(args.key) if args.key else None,
                                     signers=signers, trust_config=trust_config)  # fmt: skip
    for item in found.verified:
        what = "kaudit kernel inventory" if item.predicate_type == attestation.PREDICATE_TYPE else item.predicate_type
        print(f"verified: {what} attestation {item.artifact} for {digest}")
    for reason in found.refused:
        print(f"kaudit: NOT verified: {reason}", file=sys.stderr)
    if found.legacy_signature:
        print(f"note: a legacy cosign signature ({digest.replace(':', '-')}.sig) exists; it carries no inclusion "
              "proof and cannot be verified offline", file=sys.stderr)  # fmt: skip
    if not found.verified:
        print(f"kaudit: no verified attestation for {digest}", file=sys.stderr)
        return EXIT_GATE
    if found.refused:
        return EXIT_GATE
    return _gate_attested(args, found, digest) if args.policy else EXIT_OK


def _gate_attested(args: argparse.Namespace, found: Found, digest: str) -> int:
    """The CI gate on the attested inventory (the webhook obtains it with the same code): the policy's rules."""
    from kaudit.formats.admission import read_admission_report
    from kaudit.policy.engine import evaluate
    from kaudit.policy.load import load_catalog, load_policy, resolve_policy
    from kaudit.signing.attestation import PREDICATE_TYPE

    inventories = [item for item in found.verified if item.predicate_type == PREDICATE_TYPE]
    if not inventories:
        print(f"kaudit: no kaudit inventory is attested for {digest}; nothing to judge", file=sys.stderr)
        return EXIT_GATE
    report = read_admission_report(json.dumps(inventories[0].statement["predicate"]))
    catalog = load_catalog()
    policy = load_policy(resolve_policy(args.policy), catalog)
    result = evaluate(report, policy, catalog, image_reference=args.reference, trust_config=args.trust_config)
    for finding in result.findings:
        print(f"{finding.rule.id} {finding.severity.value} {finding.mode.value}: {finding.violation.message}")
    return _Gate(policy, catalog, policy.fail_on).exit_code(result)


def _cache_signature(args: argparse.Namespace) -> int:
    from kaudit.signing import cache
    from kaudit.signing.trust import SignatureError

    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    signature = Path(args.signature) if args.signature else cache.default_signature(directory)
    if args.command == "sign":
        bundle = cache.sign_with_key(directory, _read(args.key), signature)
        count = len(json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))["predicate"]["resources"])
        print(f"signed {count} files of {directory} into {signature}")
        return EXIT_OK
    signers, trust_config = _signers(args)
    try:
        verified = cache.verify(directory, signature, public_key_pem=_read(args.key) if args.key else None,
                                signers=signers, trust_config=trust_config)  # fmt: skip
    except SignatureError as exc:
        print(f"kaudit: NOT verified: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_GATE
    print(f"verified {len(verified)} files of {directory} against {signature}")
    return EXIT_OK


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _webhook_serve(args: argparse.Namespace) -> int:
    """The same application gunicorn serves, on Flask's development server."""
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    if not os.path.isdir(args.reports):
        raise UsageError(f"--reports {args.reports} is not a directory")
    from webhook.app import create_app
    from webhook.tls import ReloadingContext

    app = create_app(args.policy, args.reports)
    context = ReloadingContext(args.cert, args.key).current if args.cert else None
    app.run(host=args.host, port=args.port, ssl_context=context, threaded=True)
    return EXIT_OK


def _policy_command(args: argparse.Namespace) -> int:
    from kaudit.policy.load import available_policies, load_catalog, load_policy
    from kaudit.policy.yamlfile import PolicyFileError

    catalog = load_catalog()
    if args.action == "list":
        width = max(len(rule.title) for rule in catalog.values())
        for rule in catalog.values():
            print(f"{rule.id}  {rule.severity.value:<8}  {rule.title:<{width}}  {', '.join(rule.tags)}")
        print("\npolicies: " + ", ".join(available_policies()))
        return EXIT_OK
    if args.action == "explain":
        explained = catalog.get(args.rule.upper())
        if explained is None:
            raise UsageError(f"no rule {args.rule!r}; `kaudit policy list` shows them")
        rule = explained
        policies = {name: load_policy(path, catalog) for name, path in available_policies().items()}
        print(f"{rule.id} {rule.name}: {rule.title}\nseverity: {rule.severity.value}   tags: {', '.join(rule.tags)}")
        print(f"\nWhy it matters\n  {rule.rationale}\n\nHow to fix\n  {rule.remediation}\n\nIn the bundled policies")
        for name, policy in policies.items():
            setting = policy.setting(rule.id)
            print(f"  {name}: {setting.mode.value}, {(setting.severity or rule.severity).value}")
        return EXIT_OK
    try:
        policy = load_policy(Path(args.file), catalog)
    except PolicyFileError as exc:
        print(f"kaudit: invalid policy: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_GATE
    fleet = ", ".join(gpu.name for gpu in policy.fleet_archs) or "none"
    print(f"{args.file}: valid policy {policy.name!r} (fleet {fleet}; {len(policy.rules)} rule settings, "
          f"{len(policy.exemptions)} exemptions)")  # fmt: skip
    return EXIT_OK


def _merge_base(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--merge-into {path}: cannot read a JSON SBOM: {exc}") from exc
    if not isinstance(document, dict):
        raise UsageError(f"--merge-into {path}: not a CycloneDX JSON SBOM")
    return document


def _write(spec: OutputSpec, report: ScanReport, policy: PolicyResult | None = None,
           merge_into: str | None = None) -> None:  # fmt: skip
    if spec.format == "cyclonedx-json" and merge_into is not None:
        from kaudit.formats.cyclonedx import CycloneDxJson

        renderer: Format = CycloneDxJson(_merge_base(merge_into))
    elif spec.format == "table":
        from kaudit.formats.table import TableFormat

        color = spec.path is None and sys.stdout.isatty()
        width = os.get_terminal_size().columns if color else None
        renderer = TableFormat(width=width, color=color)
    else:
        renderer = format_class(spec.format)()
    if spec.path is None:
        renderer.write(report, sys.stdout, policy)
        sys.stdout.flush()
        return
    try:
        # file names from scanned images are not always UTF-8: escape what cannot be encoded instead of failing
        with open(spec.path, "w", encoding="utf-8", errors="backslashreplace") as handle:
            renderer.write(report, handle, policy)
    except OSError as exc:
        raise UsageError(f"cannot write {spec.format} output to {spec.path}: {exc.strerror}") from exc


@contextmanager
def _progress(enabled: bool, paths: Sequence[str], force: bool) -> Iterator[Callable[[str, int], None] | None]:
    """A rich progress bar over bytes examined, on standard error; nothing when disabled."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    total = sum(_tree_size(p) for p in paths)
    with Progress(
        TextColumn("scanning"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", markup=False),
        console=Console(stderr=True, force_terminal=force or None),
        transient=True,
    ) as progress:
        task = progress.add_task("scan", total=total or None, current="")

        def advance(path: str, bytes_seen: int) -> None:
            progress.update(task, completed=bytes_seen, current=os.path.basename(path)[:40])

        yield advance


def _tree_size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            total += info.st_size
    return total

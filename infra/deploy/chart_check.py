"""Offline checks of the Helm chart (infra/deploy/helm/turnflow), for `make lint` and the suite.

No Kubernetes API server runs on our machines, so this does what can be done without one: render
every profile (the chart's defaults and each `ci/*-values.yaml`) with Helm's own engine
(helm-python-sdk), check the values against values.schema.json, `helm lint --strict`, validate each
core object against the Kubernetes schemas of every version a profile supports (kubernetes-validate,
strict: unknown fields refused), validate each custom resource against its CRD's schema kept in
crd-schemas/, and lint the rendered YAML (yamllint). `--checkov` also runs checkov over it (its own
virtual environment: `make lint`; the checks skipped are in checkov-skips.yaml, each with why).

    python -m infra.deploy.chart_check            # exit 1 on any problem, each printed
    python -m infra.deploy.chart_check --checkov
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE / "helm" / "turnflow"
CRD_SCHEMAS = HERE / "crd-schemas"
CHECKOV_SKIPS = HERE / "checkov-skips.yaml"
RELEASE, NAMESPACE = "turnflow", "turnflow"

# The Kubernetes versions each profile is validated against: its lowest supported, then the newest
# kubernetes-validate knows. Image volumes (ociRef weights, CNPG's pgvector image) are on by default
# from 1.35.
KUBE_VERSIONS = {
    "default": ("1.30.0", "1.37.0"),
    "minimal": ("1.30.0", "1.37.0"),
    "gpu-vllm": ("1.35.0", "1.37.0"),
    "enterprise-onprem": ("1.35.0", "1.37.0"),
}

YAMLLINT_CONFIG = """
extends: default
rules:
  line-length: disable
  document-start: disable
  indentation: {indent-sequences: whatever}
  truthy: {check-keys: false}
"""


@dataclass(frozen=True)
class Rendered:
    profile: str
    values: dict[str, Any]
    docs: list[dict[str, Any]]
    text: str  # every manifest, as Helm wrote it

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        if len(found) != 1:
            raise LookupError(f"{self.profile}: {len(found)} {kind} named {name!r}")
        return found[0]


def profiles() -> dict[str, dict[str, Any]]:
    """The chart's defaults (no values) and each CI profile's values."""
    found: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        found[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return found


@cache
def chart() -> Any:
    from helm_python.chart import Chart

    return Chart.load(CHART)


def render(values: dict[str, Any], profile: str = "custom") -> Rendered:
    """The chart rendered as `helm template` would (an install), after the schema check."""
    loaded = chart()
    loaded.validate_schema(values)
    manifests = loaded.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    texts = [text for path, text in sorted(manifests.items()) if path.endswith((".yaml", ".yml"))]
    docs = [d for text in texts for d in yaml.safe_load_all(text) if d]
    return Rendered(profile, values, docs, "\n---\n".join(t.strip() for t in texts if t.strip()) + "\n")


def helm_lint(values: dict[str, Any], kube_version: str) -> list[str]:
    from helm_python.chart import lint

    report = lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    return [f"helm lint: {m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists the known ones (the API server
    prunes them silently; `kubectl apply --validate=strict` refuses them)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        # OpenAPI's int-or-string has no JSON Schema type: either is fine.
        if schema.get("x-kubernetes-int-or-string"):
            schema.pop("type", None)
            schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if schema.get("nullable"):
            kind = schema.get("type")
            if isinstance(kind, str):
                schema["type"] = [kind, "null"]
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.rpartition("/")
    path = CRD_SCHEMAS / f"{group}_{version}_{kind}.json"
    if not path.exists():
        return None
    schema: dict[str, Any] = _strict(json.loads(path.read_text())["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # checked by the API server, not the CRD
    schema["properties"].pop("status", None)
    return schema


def validate(doc: dict[str, Any], kube_version: str) -> list[str]:
    """Problems with one rendered object; [] when it is valid."""
    import jsonschema
    import kubernetes_validate

    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    api_version = doc.get("apiVersion", "")
    if "/" in api_version and "." in api_version.split("/")[0]:
        schema = crd_schema(api_version, doc["kind"])
        if schema is not None:
            validator = jsonschema.Draft7Validator(schema)
            return [
                f"{where}: {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
                for e in validator.iter_errors(doc)
            ]
        if not api_version.endswith(".k8s.io/v1") and not api_version.startswith(
            ("networking.k8s.io", "scheduling.k8s.io", "policy", "autoscaling", "apps", "batch")
        ):
            return [f"{where}: no schema for {api_version} {doc['kind']} in {CRD_SCHEMAS.name}/"]
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{where} (Kubernetes {kube_version}): {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: Kubernetes {kube_version} has no {api_version} {doc.get('kind')}"]
    return []


def yamllint(text: str) -> list[str]:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(YAMLLINT_CONFIG)
    return [f"yamllint: line {p.line}: {p.message}" for p in linter.run(text, config) if p.level == "error"]


def checkov(rendered: list[Rendered], checkov_bin: str) -> list[str]:
    skips = yaml.safe_load(CHECKOV_SKIPS.read_text())["skip"]
    with tempfile.TemporaryDirectory() as scratch:
        for r in rendered:
            (Path(scratch) / f"{r.profile}.yaml").write_text(r.text)
        done = subprocess.run(
            [
                checkov_bin,
                "--quiet",
                "--compact",
                "--framework",
                "kubernetes",
                "--skip-download",
                "--output",
                "json",
                "--directory",
                scratch,
                "--skip-check",
                ",".join(skips),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode not in (0, 1):
        return [f"checkov failed to run: {done.stderr[-2000:]}"]
    reports = json.loads(done.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    return [
        f"checkov {c['check_id']} ({c['check_name']}): {c['resource']} in {Path(c['file_path']).name}"
        for report in reports
        for c in report.get("results", {}).get("failed_checks", [])
    ]


def problems(run_checkov: bool = False, checkov_bin: str = "checkov") -> Iterator[str]:
    rendered = []
    for profile, values in profiles().items():
        try:
            r = render(values, profile)
        except Exception as exc:  # helm's errors: say which profile, and go on to the others
            yield f"{profile}: does not render: {exc}"
            continue
        rendered.append(r)
        for version in KUBE_VERSIONS.get(profile, KUBE_VERSIONS["default"]):
            for problem in helm_lint(values, version):
                yield f"{profile}: {problem}"
            for doc in r.docs:
                for problem in validate(doc, version):
                    yield f"{profile}: {problem}"
        for problem in yamllint(r.text):
            yield f"{profile}: {problem}"
    if run_checkov:
        yield from checkov(rendered, checkov_bin)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkov", action="store_true", help="also run checkov over the rendered profiles")
    parser.add_argument("--checkov-bin", default=shutil.which("checkov") or "checkov")
    args = parser.parse_args(argv)
    found = list(problems(args.checkov, args.checkov_bin))
    for problem in found:
        print(problem)
    checked = ", ".join(profiles())
    print(f"{len(found)} problem(s) in the chart's profiles ({checked})", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

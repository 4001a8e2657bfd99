#!/usr/bin/env python3
"""Renders the Helm chart and checks it against the Dockerfile and the service's configuration.

Run by scripts/check-deploy inside its venv (helm-python-sdk, PyYAML). Usage:

    check_deploy.py OUT_DIR

For each scenario (the chart's defaults plus a bucket, and every ci/*-values.yaml file) it:
  - lints the chart (strict) and validates the values against values.schema.json;
  - renders it and writes OUT_DIR/<scenario>/manifests/*.yaml (Kubernetes kinds, for
    kubernetes-validate), OUT_DIR/<scenario>/crds/*.yaml (ServiceMonitor, a CRD no offline schema
    covers) and OUT_DIR/<scenario>/all.yaml (everything, for yamllint);
  - checks that the image and the chart agree: EXPOSE vs containerPorts and listen addresses,
    ENTRYPOINT/CMD vs command/args, USER vs runAsUser/runAsGroup, the image's
    LAMBDA_PACKAGER_* variables vs the Deployment's env and packager.toml, writable paths vs the
    emptyDir, probes vs the API port, and the objects' references to each other;
  - checks that packager.toml parses (tomllib) and has only keys config/packager.toml documents,
    each with the documented type.
Then it checks that the chart refuses what it must refuse (no bucket, unknown keys, chart-owned
keys, a grace period shorter than the drain). Every failure is printed; exit status 1 if any.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
import tomllib
import traceback
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "lambda-packager"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXAMPLE_CONFIG = REPO / "config" / "packager.toml"
CARGO_TOML = REPO / "Cargo.toml"
# The deploy guide (README.md keeps only a pointer to it).
DEPLOY_DOC = REPO / "docs" / "deploy.md"
ENV_PREFIX = "LAMBDA_PACKAGER_"
# Kinds that are CRDs: kubernetes-validate has no schema for them, so they are kept apart and
# checked here for their references instead (selector and port names).
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Configuration keys that name a directory the service writes to.
WRITABLE_KEYS = {"pack.temp_dir", "git.mirror_dir", "store.local.path"}
KUBE_VERSION = "v1.30.0"

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


def ok(where: str, message: str) -> None:
    print(f"ok   {where}: {message}")


def check(cond: bool, where: str, message: str) -> bool:
    (ok if cond else fail)(where, message)
    return cond


# --- the Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        instruction, _, args = current.partition(" ")
        out.append((instruction.upper(), args.strip()))
        current = ""
    return out


def parse_dockerfile() -> dict[str, Any]:
    """The runtime (last) stage's contract, plus facts about the build stage."""
    where = "Dockerfile"
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in instructions:
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    image: dict[str, Any] = {"env": {}, "expose": set(), "copies": [], "stages": stages}
    for stage in stages:
        for instruction, args in stage:
            if instruction == "COPY":
                image["copies"].append(args)
    for instruction, args in stages[-1]:
        if instruction == "ENV":
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                if not sep:
                    fail(where, f"ENV {pair!r}: use the KEY=VALUE form")
                image["env"][key] = value
        elif instruction == "EXPOSE":
            image["expose"] |= {int(p.split("/")[0]) for p in args.split()}
        elif instruction in ("ENTRYPOINT", "CMD"):
            try:
                image[instruction.lower()] = json.loads(args)
            except json.JSONDecodeError:
                fail(where, f"{instruction} must use the exec (JSON array) form, found {args!r}")
        elif instruction == "USER":
            image["user"] = args
    for key in ("entrypoint", "cmd", "user"):
        if key not in image:
            fail(where, f"the runtime stage has no {key.upper()}")
    return image


def check_dockerfile(image: dict[str, Any]) -> None:
    where = "Dockerfile"
    rust_version = tomllib.loads(CARGO_TOML.read_text())["package"]["rust-version"]
    build_from = image["stages"][0][0][1]
    check(
        re.match(rf"rust:{re.escape(rust_version)}(-|$)", build_from) is not None,
        where,
        f"the build stage uses the official Rust image of rust-version {rust_version} ({build_from})",
    )
    runs = [args for stage in image["stages"] for instruction, args in stage if instruction == "RUN"]
    build = "cargo build --release --locked"
    check(any(build in run for run in runs), where, f"the build runs `{build}`")
    guide = DEPLOY_DOC.read_text() if DEPLOY_DOC.exists() else ""
    check("docker build" in guide and build in guide, "docs",
          f"{DEPLOY_DOC.relative_to(REPO)} shows `docker build` and gives the same build command `{build}`")
    uid, _, gid = image.get("user", "").partition(":")
    check(
        uid.isdigit() and gid.isdigit() and int(uid) != 0,
        where,
        f"USER is a fixed numeric non-root uid:gid ({image.get('user')})",
    )
    # The context is an allow-list: every COPY source from the context must be let in.
    lines = [l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
    if not lines or lines[0] != "*":
        fail(".dockerignore", "must start with `*` (an allow-list of what the build copies)")
    allowed = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    for args in image["copies"]:
        parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        sources = [p.rstrip("/") for p in parts[:-1] if not p.startswith("--")]
        for source in sources:
            check(source in allowed, ".dockerignore", f"lets in {source}, which the Dockerfile copies")


# --- the service's configuration -------------------------------------------------------------


def documented_config() -> dict[str, Any]:
    """config/packager.toml with its commented-out example keys (`# workers = 2`) included."""
    lines = []
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        m = re.match(r"^#\s*([a-z_][a-z0-9_]*\s*=.*)$", line)
        lines.append(m.group(1) if m else line)
    return tomllib.loads("\n".join(lines))


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, path + ".")
        else:
            out[path] = value
    return out


def env_key(name: str) -> str:
    """LAMBDA_PACKAGER_STORE__S3__BUCKET -> store.s3.bucket"""
    return name[len(ENV_PREFIX) :].lower().replace("__", ".")


def toml_text(value: Any) -> str:
    """The value as an environment variable carries it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- rendering -------------------------------------------------------------------------------


def render(values: dict[str, Any], release: str) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        return chart.render(values, name=release, namespace="lambda-packager")


def split_objects(manifests: dict[str, str]) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    objects = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((template, doc))
    return objects, notes


def write_rendered(out: Path, manifests: dict[str, str], objects: list[tuple[str, dict[str, Any]]]) -> None:
    (out / "manifests").mkdir(parents=True)
    (out / "crds").mkdir()
    all_docs = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            (out / "NOTES.txt").write_text(text)
            continue
        text = text.strip()
        if not text:
            continue
        doc = f"---\n# Source: {template}\n{text}\n"
        all_docs.append(doc)
        obj = yaml.safe_load(text)
        kind_dir = "crds" if (obj["apiVersion"], obj["kind"]) in CRD_KINDS else "manifests"
        (out / kind_dir / Path(template).name).write_text(doc)
    (out / "all.yaml").write_text("".join(all_docs))


# --- the checks on one rendered scenario -----------------------------------------------------


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def check_scenario(name: str, values: dict[str, Any], release: str, out: Path, image: dict[str, Any]) -> None:
    where = name
    report = helm.lint(CHART, values, strict=True, kube_version=KUBE_VERSION)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
    infos = [m["error"] for m in report["messages"] if m["severity"] < 2]
    check(not problems, where, f"helm lint --strict: {problems or 'no warnings or errors'}" + (f" (info: {infos})" if infos else ""))
    try:
        manifests = render(values, release)
    except helm.HelmError as e:
        fail(where, f"the chart does not render: {e}")
        return
    ok(where, f"renders ({', '.join(sorted(Path(t).name for t, v in manifests.items() if v.strip()))})")
    objects, notes = split_objects(manifests)
    write_rendered(out / name, manifests, objects)

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _, obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    for kind in ("Deployment", "Service", "ConfigMap"):
        if len(by_kind.get(kind, [])) != 1:
            fail(where, f"expected exactly one {kind}, found {len(by_kind.get(kind, []))}")
            return
    deployment, service, configmap = by_kind["Deployment"][0], by_kind["Service"][0], by_kind["ConfigMap"][0]
    pod = deployment["spec"]["template"]
    pod_spec = pod["spec"]
    pod_labels = pod["metadata"].get("labels") or {}
    containers = pod_spec["containers"]
    if not check(len(containers) == 1, where, "the pod has one container"):
        return
    container = containers[0]
    ports = {p["name"]: p["containerPort"] for p in (container.get("ports") or [])}
    env = {e["name"]: e for e in (container.get("env") or [])}

    # packager.toml: parses, documented keys only, documented types.
    documented = flatten(documented_config())
    try:
        rendered_toml = tomllib.loads(configmap["data"]["packager.toml"])
    except (KeyError, tomllib.TOMLDecodeError) as e:
        fail(where, f"the ConfigMap's packager.toml does not parse as TOML: {e}")
        return
    ok(where, "packager.toml parses as TOML")
    rendered = flatten(rendered_toml)
    unknown = sorted(set(rendered) - set(documented))
    check(not unknown, where, f"packager.toml has only keys config/packager.toml documents (unknown: {unknown or 'none'})")
    wrong_types = [
        f"{k} is {type(v).__name__}, documented {type(documented[k]).__name__}"
        for k, v in rendered.items()
        if k in documented and type(v) is not type(documented[k])
    ]
    check(not wrong_types, where, f"packager.toml values have the documented types ({wrong_types or 'all'})")
    check("auth.tokens" not in rendered, where, "no tokens in the ConfigMap (they come from a Secret)")
    check(rendered.get("store.backend") == "s3" and bool(rendered.get("store.s3.bucket")), where,
          f"store is S3 with a bucket ({rendered.get('store.backend')}, {rendered.get('store.s3.bucket')!r})")

    # Environment: the image's variables, the Deployment's, and the file must tell one story.
    for var in env:
        if var.startswith(ENV_PREFIX) and "__" in var:
            check(env_key(var) in documented, where, f"Deployment env {var} is a documented key ({env_key(var)})")
    for var, image_value in image["env"].items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = env_key(var)
        check(key in documented, "Dockerfile", f"ENV {var} is a documented key ({key})")
        if key in rendered:
            chart_value = env.get(var, {}).get("value")
            check(
                chart_value == toml_text(rendered[key]),
                where,
                f"{var} (set by the image to {image_value!r}, and variables win over the file) is set by "
                f"the Deployment to packager.toml's {key} = {toml_text(rendered[key])!r} (found {chart_value!r})",
            )

    def effective(key: str) -> str | None:
        var = ENV_PREFIX + key.upper().replace(".", "__")
        if var in env and "value" in env[var]:
            return env[var]["value"]
        if key in rendered:
            return toml_text(rendered[key])
        return image["env"].get(var)

    # Listeners, ports, probes.
    check(set(ports.values()) == image["expose"], where,
          f"containerPorts {sorted(ports.values())} are the image's EXPOSE {sorted(image['expose'])}")
    for key, port_name in (("server.listen", "http"), ("server.admin_listen", "metrics")):
        listen = effective(key) or ""
        host, _, port = listen.rpartition(":")
        check(host == "0.0.0.0" and port.isdigit() and int(port) == ports.get(port_name), where,
              f"{key} {listen!r} listens on 0.0.0.0 at containerPort {port_name} ({ports.get(port_name)})")
        image_listen = image["env"].get(ENV_PREFIX + key.upper().replace(".", "__"), "")
        check(image_listen.rpartition(":")[2].isdigit() and int(image_listen.rpartition(":")[2]) in image["expose"],
              "Dockerfile", f"{key} {image_listen!r} is an EXPOSEd port")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        port = get.get("port")
        port_number = ports.get(port) if isinstance(port, str) else port
        check(get.get("path") == path and port_number == ports.get("http"), where,
              f"{probe} is GET {path} on the API port {ports.get('http')} (found {get.get('path')} on {port})")

    # Command: the image's ENTRYPOINT runs the chart's args, which start with the image's CMD.
    command = container.get("command")
    check(command is None or command == image.get("entrypoint"), where,
          f"command is unset or the image's ENTRYPOINT {image.get('entrypoint')} (found {command})")
    args = container.get("args") or []
    cmd = image.get("cmd") or []
    check(args[: len(cmd)] == cmd, where, f"args {args} start with the image's CMD {cmd}")
    mounts = {m["mountPath"]: m for m in (container.get("volumeMounts") or [])}
    volumes = {v["name"]: v for v in (pod_spec.get("volumes") or [])}
    if "--config" in args:
        config_path = args[args.index("--config") + 1]
        directory, _, filename = config_path.rpartition("/")
        mount = mounts.get(directory)
        volume = volumes.get(mount["name"]) if mount else None
        check(
            volume is not None
            and (volume.get("configMap") or {}).get("name") == configmap["metadata"]["name"]
            and filename in configmap["data"],
            where,
            f"--config {config_path} is the ConfigMap's {filename}, mounted at {directory}",
        )

    # User and file system.
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    eff = lambda k: sc.get(k, pod_sc.get(k))  # noqa: E731
    uid, _, gid = image.get("user", "").partition(":")
    check(str(eff("runAsUser")) == uid and str(eff("runAsGroup")) == gid, where,
          f"runAsUser:runAsGroup {eff('runAsUser')}:{eff('runAsGroup')} is the image's USER {image.get('user')}")
    check(eff("runAsNonRoot") is True, where, "runAsNonRoot")
    check(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem")
    check(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation: false")
    check("ALL" in (sc.get("capabilities") or {}).get("drop", []), where, "capabilities drop ALL")
    check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", where, "seccompProfile RuntimeDefault")
    empty_dirs = [path for path, m in mounts.items() if "emptyDir" in volumes.get(m["name"], {})]
    for key in sorted(WRITABLE_KEYS):
        value = effective(key)
        if value is None:
            continue
        check(any(value == d or value.startswith(d.rstrip("/") + "/") for d in empty_dirs), where,
              f"{key} = {value} is on a writable emptyDir ({empty_dirs}); the root file system is read-only")
        image_value = image["env"].get(ENV_PREFIX + key.upper().replace(".", "__"))
        if image_value is not None:
            check(image_value.startswith("/tmp/"), "Dockerfile", f"{key} = {image_value} is under /tmp")

    # Shutdown: the kubelet must not kill a drain in progress.
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    drain = rendered.get("server.shutdown_grace_secs", documented["server.shutdown_grace_secs"])
    pre_stop = (container.get("lifecycle") or {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    check(grace > drain + sleep, where,
          f"terminationGracePeriodSeconds {grace} > preStop sleep {sleep} + shutdown_grace_secs {drain}")

    # Pod annotations.
    annotations = pod["metadata"].get("annotations") or {}
    configmap_template = next(t for t in manifests if t.endswith("/configmap.yaml"))
    check(annotations.get("checksum/config") == hashlib.sha256(manifests[configmap_template].encode()).hexdigest(),
          where, "checksum/config is the sha256 of the rendered ConfigMap")
    if annotations.get("prometheus.io/scrape") == "true":
        check(annotations.get("prometheus.io/port") == str(ports.get("metrics"))
              and annotations.get("prometheus.io/path") == "/metrics", where,
              f"prometheus.io annotations scrape /metrics on the metrics port {ports.get('metrics')}")

    # References between objects.
    check(subset(service["spec"]["selector"], pod_labels), where, "the Service selects the pods")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        check(port["targetPort"] in ports or port["targetPort"] in ports.values(), where,
              f"Service port {port['name']} targets a container port ({port['targetPort']})")
    check({"http", "metrics"} <= set(service_ports), where, "the Service exposes http and metrics")
    check(subset(deployment["spec"]["selector"]["matchLabels"], pod_labels), where, "the Deployment selects its pods")
    for sa in by_kind.get("ServiceAccount") or []:
        check(sa["metadata"]["name"] == pod_spec.get("serviceAccountName"), where, "the pod runs as the chart's ServiceAccount")
    for constraint in pod_spec.get("topologySpreadConstraints") or []:
        selector = (constraint.get("labelSelector") or {}).get("matchLabels", {})
        check(subset(selector, pod_labels), where, f"topologySpreadConstraint {constraint['topologyKey']} selects the pods")
    for ingress in by_kind.get("Ingress") or []:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                check(backend["name"] == service["metadata"]["name"] and backend["port"].get("name") in service_ports,
                      where, f"Ingress {rule.get('host')}{path['path']} routes to the Service's {backend['port']}")
    hpas = by_kind.get("HorizontalPodAutoscaler") or []
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        check(target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"], where,
              "the HPA scales the Deployment")
        check("replicas" not in deployment["spec"], where, "with an HPA the Deployment leaves replicas to it")
        uses_cpu = any((m.get("resource") or {}).get("name") == "cpu" for m in (hpa["spec"].get("metrics") or []))
        if uses_cpu:
            check("cpu" in (container.get("resources") or {}).get("requests", {}), where,
                  "the container requests CPU (the HPA's utilization target needs it)")
    for pdb in by_kind.get("PodDisruptionBudget") or []:
        check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels), where, "the PodDisruptionBudget selects the pods")
        replicas = hpas[0]["spec"]["minReplicas"] if hpas else deployment["spec"].get("replicas", 1)
        minimum = pdb["spec"].get("minAvailable")
        if isinstance(minimum, int):
            check(minimum < replicas, where, f"PodDisruptionBudget minAvailable {minimum} < replicas {replicas} (drains can proceed)")
    for monitor in by_kind.get("ServiceMonitor") or []:
        check(subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]), where,
              "the ServiceMonitor selects the Service")
        for endpoint in monitor["spec"]["endpoints"]:
            check(endpoint.get("port") in service_ports and endpoint.get("path") == "/metrics", where,
                  f"the ServiceMonitor scrapes /metrics on Service port {endpoint.get('port')}")

    # What the scenario asked for is what was rendered.
    auth = (values.get("auth") or {}).get("existingSecret")
    tokens = env.get(ENV_PREFIX + "AUTH__TOKENS", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if auth:
        check(tokens.get("name") == auth, where, f"LAMBDA_PACKAGER_AUTH__TOKENS comes from Secret {auth}")
    else:
        check(not tokens, where, "no token Secret configured, no LAMBDA_PACKAGER_AUTH__TOKENS")
    role = (values.get("serviceAccount") or {}).get("annotations", {}).get("eks.amazonaws.com/role-arn")
    if role:
        sa_annotations = by_kind["ServiceAccount"][0]["metadata"].get("annotations") or {}
        check(sa_annotations.get("eks.amazonaws.com/role-arn") == role, where, "the ServiceAccount carries the IRSA role")
    for flag, kind in ((("autoscaling", "enabled"), "HorizontalPodAutoscaler"), (("ingress", "enabled"), "Ingress"),
                       (("metrics", "serviceMonitor", "enabled"), "ServiceMonitor")):
        wanted: Any = values
        for part in flag:
            wanted = wanted.get(part, {}) if isinstance(wanted, dict) else {}
        if wanted is True:
            check(kind in by_kind, where, f"{'.'.join(flag)} renders the {kind}")
    check("curl" in notes, where, "NOTES.txt has a curl example")


# --- what the chart must refuse --------------------------------------------------------------


def check_refusals(bucket: dict[str, Any]) -> None:
    where = "refusals"

    def refused(values: dict[str, Any], expect: str, what: str) -> None:
        try:
            render(values, "packager")
        except helm.HelmError as e:
            check(expect in str(e), where, f"{what}: refused, naming {expect!r}"
                  + ("" if expect in str(e) else f" (message: {e})"))
            return
        fail(where, f"{what}: rendered, but must be refused")

    refused({}, "config.store.s3.bucket is required", "no bucket (N replicas on per-pod local stores)")
    refused(merge(bucket, {"config": {"store": {"bakend": "s3"}}}), "bakend", "an unknown config key")
    refused(merge(bucket, {"config": {"server": {"listen": "0.0.0.0:1"}}}), "listen", "a chart-owned key (server.listen)")
    refused(merge(bucket, {"config": {"auth": {"tokens": ["t"]}}}), "auth", "tokens in the ConfigMap")
    refused(merge(bucket, {"replicacount": 3}), "replicacount", "a misspelt top-level value")
    refused(merge(bucket, {"terminationGracePeriodSeconds": 20}), "terminationGracePeriodSeconds",
            "a grace period shorter than the drain")


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit("usage: check_deploy.py OUT_DIR")
    out = Path(sys.argv[1])
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    image = parse_dockerfile()
    check_dockerfile(image)
    bucket = {"config": {"store": {"s3": {"bucket": "ci-bucket"}}}}
    scenarios = [("default-with-bucket", bucket, "lambda-packager")]
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        values = helm.values_from_yaml(path.read_text())
        # Scenario files name the release they are written for (labels in selectors depend on it).
        scenarios.append((path.name.removesuffix("-values.yaml"), values, "packager"))
    for name, values, release in scenarios:
        print(f"== scenario {name}")
        try:
            check_scenario(name, values, release, out, image)
        except Exception as e:  # a manifest of a shape the checks did not expect
            traceback.print_exc()
            fail(name, f"the checks could not read the rendered objects ({type(e).__name__}: {e}); see {out / name}")
    print("== refusals")
    check_refusals(bucket)
    if failures:
        print(f"\n{len(failures)} deployment check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    print("\nall deployment checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

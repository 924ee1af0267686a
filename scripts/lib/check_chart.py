"""Checks of the Helm chart helm/posthorn; run by scripts/check-chart.sh in its venv.

Lints the chart (strict), renders it with every value set under helm/posthorn/ci/,
checks that every rendered document is YAML, validates the core manifests with
`kubernetes-validate -k 1.30.0 --strict` (the ServiceMonitor CRD is checked here
instead), asserts the chart's invariants, renders value sets that must fail, and
checks that the chart's README documents every value.

Prints one line per check ("ok" or "FAIL") and exits 1 if any failed.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "posthorn"
KUBE_VERSION = "1.30.0"
NAMESPACE = "mail"
SECRET_VARS = ("POSTHORN_DATABASE_URL", "POSTHORN_JWT_SECRET", "POSTHORN_SMTP_URL")
SECRET_VALUE_KEYS = {"POSTHORN_DATABASE_URL": "databaseUrl", "POSTHORN_JWT_SECRET": "jwtSecret",
                     "POSTHORN_SMTP_URL": "smtpUrl"}
CRD_KINDS = {"ServiceMonitor"}
MISSING_SECRETS = "secrets.databaseUrl is required when existingSecret is empty"

failures: list[str] = []


def check(name: str, fn: Callable[[], str | None]) -> None:
    """Runs one check and prints one line for it."""
    try:
        detail = fn()
    except AssertionError as error:
        failures.append(name)
        print(f"FAIL  chart: {name}: {error}")
    except Exception as error:  # noqa: BLE001 - any error fails the check
        failures.append(name)
        print(f"FAIL  chart: {name}: {type(error).__name__}: {error}")
        traceback.print_exc(limit=3, file=sys.stdout)
    else:
        print(f"ok    chart: {name}{f' ({detail})' if detail else ''}")


@contextlib.contextmanager
def captured_stderr() -> Any:
    """Captures file descriptor 2: Helm's lint mode logs each `required`/`fail` it skips there."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        captured: list[str] = []
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read())


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Release:
    """One rendering of the chart: its documents by kind, and the values it used."""

    def __init__(self, chart: helm.Chart, values: dict[str, Any], name: str = "posthorn"):
        self.user_values = values
        self.values = chart.merge_values(values)
        self.name = name
        self.raw = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
        self.docs: list[dict[str, Any]] = []
        for template, text in sorted(self.raw.items()):
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc is None:
                    continue
                assert isinstance(doc, dict), f"{template}: a document is not a mapping"
                doc["__template"] = template
                self.docs.append(doc)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        assert len(found) <= 1, f"expected at most one {kind}, found {len(found)}"
        return found[0] if found else None

    @property
    def pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["containers"]
        assert len(containers) == 1, f"expected one container, found {len(containers)}"
        return containers[0]

    def configmap(self) -> dict[str, Any]:
        fullname = self.one("Deployment")["metadata"]["name"]
        found = [doc for doc in self.all("ConfigMap") if doc["metadata"]["name"] == fullname]
        assert len(found) == 1, f"expected the ConfigMap {fullname}"
        return found[0]


# --- checks of one rendered value set ---------------------------------------------------------


def check_documents(rel: Release) -> str:
    kinds = []
    for doc in rel.docs:
        where = doc["__template"]
        for field in ("apiVersion", "kind"):
            assert doc.get(field), f"{where}: no {field}"
        meta = doc.get("metadata") or {}
        assert meta.get("name"), f"{where}: no metadata.name"
        assert meta.get("namespace") == NAMESPACE, f"{where}: metadata.namespace is not {NAMESPACE}"
        labels = meta.get("labels") or {}
        for label in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
            assert label in labels, f"{where}: no label {label}"
        kinds.append(doc["kind"])
    return ", ".join(sorted(kinds))


def kubernetes_validate(rel: Release, workdir: Path) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for index, doc in enumerate(rel.docs):
        if doc["kind"] in CRD_KINDS:
            continue
        body = {k: v for k, v in doc.items() if k != "__template"}
        path = workdir / f"{index:02d}-{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        files.append(str(path))
    assert files, "nothing to validate"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "-k", KUBE_VERSION, "--strict",
         "--quiet", *files],
        capture_output=True, text=True, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, f"kubernetes-validate failed:\n{output}"
    return f"{len(files)} manifests"


def check_service_monitor(rel: Release) -> str:
    enabled = rel.values["serviceMonitor"]["enabled"]
    monitor = rel.maybe("ServiceMonitor")
    if not enabled:
        assert monitor is None, "ServiceMonitor rendered while serviceMonitor.enabled is false"
        return "disabled, none rendered"
    assert monitor is not None, "serviceMonitor.enabled but no ServiceMonitor"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1", monitor["apiVersion"]
    spec = monitor["spec"]
    service = rel.one("Service")
    selector = spec["selector"]["matchLabels"]
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in selector.items()), "its selector does not select the Service"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, spec["namespaceSelector"]
    assert len(spec["endpoints"]) == 1, "expected one endpoint"
    endpoint = spec["endpoints"][0]
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["port"] in port_names, f"endpoint port {endpoint['port']} is no Service port"
    assert endpoint["path"] == "/metrics", endpoint["path"]
    duration = re.compile(r"^([0-9]+(ms|s|m|h))+$")
    assert duration.match(endpoint["interval"]), f"interval {endpoint['interval']}"
    assert duration.match(endpoint["scrapeTimeout"]), f"scrapeTimeout {endpoint['scrapeTimeout']}"
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}, sorted(endpoint)
    for key, value in rel.values["serviceMonitor"]["labels"].items():
        assert monitor["metadata"]["labels"].get(key) == value, f"label {key} missing"
    return f"port {endpoint['port']}, {endpoint['path']} every {endpoint['interval']}"


def check_secrets(rel: Release) -> str:
    values = rel.values
    container = rel.container
    env = container.get("env", [])
    for entry in env:
        if entry["name"] in SECRET_VARS:
            assert "value" not in entry, f"{entry['name']} has a literal value"
    for entry in container.get("envFrom", []):
        assert "secretRef" not in entry, "envFrom a Secret: use secretKeyRef per variable"
    cm = rel.configmap()
    leaked = [key for key in SECRET_VARS if key in cm.get("data", {})]
    assert not leaked, f"the ConfigMap holds {leaked}"

    secret_name = values["existingSecret"] or rel.one("Deployment")["metadata"]["name"]
    by_name = {entry["name"]: entry for entry in env}
    for var, key_value in SECRET_VALUE_KEYS.items():
        assert var in by_name, f"{var} is not in the container's env"
        ref = by_name[var].get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{var} does not come from a secretKeyRef"
        assert ref["name"] == secret_name, f"{var} refers to Secret {ref['name']}, not {secret_name}"
        assert ref["key"] == values["secretKeys"][key_value], f"{var} key {ref['key']}"
        optional = ref.get("optional", False)
        assert optional == (var == "POSTHORN_SMTP_URL"), f"{var}: optional is {optional}"

    secret = rel.maybe("Secret")
    if values["existingSecret"]:
        assert secret is None, "a Secret is rendered although existingSecret is set"
        return f"all three from existingSecret {secret_name}"
    assert secret is not None, "no Secret rendered and no existingSecret"
    assert secret["metadata"]["name"] == secret_name
    data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    expected = {values["secretKeys"][k]: values["secrets"][k] for k in SECRET_VALUE_KEYS.values()
                if values["secrets"][k]}
    assert data == expected, f"Secret keys {sorted(data)}, expected {sorted(expected)}"
    return f"secretKeyRef to Secret {secret_name} with keys {', '.join(sorted(data))}"


def check_security(rel: Release) -> str:
    pod, container = rel.pod, rel.container
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    assert psc.get("runAsNonRoot") is True, "pod runAsNonRoot"
    assert psc.get("runAsUser") == 65532, "pod runAsUser"
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile"
    assert csc.get("runAsNonRoot") is True, "container runAsNonRoot"
    assert csc.get("runAsUser") == 65532, "container runAsUser"
    assert csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop"
    assert not csc.get("capabilities", {}).get("add"), "capabilities.add"
    assert csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container seccompProfile"
    assert pod.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken"
    account = rel.maybe("ServiceAccount")
    if account is not None:
        assert account.get("automountServiceAccountToken") is False, "ServiceAccount automount"
        assert pod["serviceAccountName"] == account["metadata"]["name"], "serviceAccountName"
    # The only writable path is the /tmp emptyDir.
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    writable = [m["mountPath"] for m in container.get("volumeMounts", []) if not m.get("readOnly")]
    assert writable == ["/tmp"], f"writable mounts {writable}"
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]], "/tmp is not an emptyDir"
    return "non-root 65532, read-only root, no privilege escalation, drop ALL, RuntimeDefault, /tmp only"


def check_deployment(rel: Release) -> str:
    values = rel.values
    deployment = rel.one("Deployment")
    pod, container = rel.pod, rel.container
    assert pod.get("enableServiceLinks") is False, "enableServiceLinks is not false"

    grace = values["shutdownGraceSeconds"]
    tgps = pod["terminationGracePeriodSeconds"]
    assert tgps > grace, f"terminationGracePeriodSeconds {tgps} <= shutdown grace {grace}"
    assert tgps == values["preStopSleepSeconds"] + grace + 10, f"terminationGracePeriodSeconds {tgps}"
    data = rel.configmap()["data"]
    assert data.get("POSTHORN_SHUTDOWN_GRACE") == f"{grace}s", data.get("POSTHORN_SHUTDOWN_GRACE")
    assert data.get("POSTHORN_LISTEN") == "0.0.0.0:8080", data.get("POSTHORN_LISTEN")
    assert data.get("POSTHORN_PROFILE") == "production", data.get("POSTHORN_PROFILE")
    assert data.get("POSTHORN_LOG_FORMAT") == values["config"].get("POSTHORN_LOG_FORMAT", "json")
    for key, value in values["config"].items():
        if value is not None and value != "":
            want = str(int(value)) if isinstance(value, (int, float)) else str(value)
            assert data.get(key) == want, f"ConfigMap {key}={data.get(key)!r}, values say {want!r}"
    refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
    assert refs == [rel.configmap()["metadata"]["name"]], f"envFrom {refs}"

    ports = container["ports"]
    assert [(p["name"], p["containerPort"]) for p in ports] == expected_container_ports(values), ports
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    submission = values.get("submission", {})
    want_listen = "0.0.0.0:2587" if submission.get("enabled") else "off"
    assert env.get("POSTHORN_SUBMISSION_LISTEN") == want_listen, env.get("POSTHORN_SUBMISSION_LISTEN")
    if submission.get("enabled") and submission.get("tlsSecret"):
        assert env.get("POSTHORN_SUBMISSION_TLS_CERT") == "/etc/posthorn/tls/tls.crt", env
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/etc/posthorn/tls" in mounts, mounts
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["startupProbe"]["path"] == "/healthz", probes
    assert probes["livenessProbe"]["path"] == "/healthz", probes
    assert probes["readinessProbe"]["path"] == "/readyz", probes
    assert all(p["port"] == "http" for p in probes.values()), probes

    resources = container["resources"]
    assert resources["requests"] == {"cpu": "50m", "memory": "64Mi"}, resources
    assert resources["limits"] == {"memory": "512Mi"}, resources

    hpa = rel.maybe("HorizontalPodAutoscaler")
    if values["autoscaling"]["enabled"]:
        assert "replicas" not in deployment["spec"], "replicas set although autoscaling is enabled"
        assert hpa is not None, "no HorizontalPodAutoscaler"
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]), target
        cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
        assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization", "no CPU target"
        replicas = f"HPA {hpa['spec']['minReplicas']}-{hpa['spec']['maxReplicas']}"
    else:
        assert hpa is None, "HorizontalPodAutoscaler while autoscaling is disabled"
        assert deployment["spec"]["replicas"] == values["replicaCount"], "replicas"
        replicas = f"{deployment['spec']['replicas']} replicas"

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    checksum = hashlib.sha256((rel.raw["posthorn/templates/configmap.yaml"]
                               + rel.raw["posthorn/templates/configmap-file.yaml"]).encode()).hexdigest()
    assert annotations.get("checksum/config") == checksum, "checksum/config is not the ConfigMaps' sha256"
    for key, value in values["podAnnotations"].items():
        assert annotations.get(key) == value, f"pod annotation {key}"

    image = container["image"]
    repo, tag, digest = values["image"]["repository"], values["image"]["tag"], values["image"]["digest"]
    want = f"{repo}@{digest}" if digest else f"{repo}:{tag or '0.1.0'}"
    assert image == want, f"image {image}, expected {want}"
    return f"{replicas}, grace {grace}s -> terminationGracePeriodSeconds {tgps}, image {image}"


def expected_container_ports(values: dict[str, Any]) -> list[tuple[str, int]]:
    """The container's named ports: http, and the SMTP submission and bounce listeners when they are on."""
    ports = [("http", 8080)]
    submission = values.get("submission", {})
    if submission.get("enabled"):
        ports.append(("smtp", 2587))
        if submission.get("tlsSecret"):
            ports.append(("smtps", 2465))
    if values.get("bounces", {}).get("enabled"):
        ports.append(("bounce", 2525))
    return ports


def check_selectors(rel: Release) -> str:
    deployment = rel.one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in selector.items()), "the selector misses the pod labels"
    service = rel.one("Service")
    assert service["spec"]["selector"] == selector, "Service selector"
    assert service["spec"]["type"] == rel.values["service"]["type"]
    want = [(name, name) for name, _ in expected_container_ports(rel.values)]
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == want
    checked = ["Service"]
    for kind in ("PodDisruptionBudget",):
        doc = rel.maybe(kind)
        if doc is not None:
            assert doc["spec"]["selector"]["matchLabels"] == selector, f"{kind} selector"
            checked.append(kind)
    policy = rel.maybe("NetworkPolicy")
    if policy is not None:
        assert policy["spec"]["podSelector"]["matchLabels"] == selector, "NetworkPolicy podSelector"
        checked.append("NetworkPolicy")
    for constraint in rel.pod.get("topologySpreadConstraints", []):
        labels = constraint["labelSelector"]["matchLabels"]
        assert all(pod_labels.get(k) == v for k, v in labels.items()), "a topology spread selects no pod"
    return "selectors agree: " + ", ".join(checked)


def check_optional(rel: Release) -> str:
    values = rel.values
    present = []
    pdb = rel.maybe("PodDisruptionBudget")
    assert (pdb is not None) == values["podDisruptionBudget"]["enabled"], "PodDisruptionBudget"
    if pdb:
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["minAvailable"] == values["podDisruptionBudget"]["minAvailable"]
        present.append("PodDisruptionBudget")

    ingress = next((doc for doc in rel.all("Ingress") if not doc["metadata"]["name"].endswith("-public")), None)
    assert (ingress is not None) == values["ingress"]["enabled"], "Ingress"
    if ingress:
        assert ingress["apiVersion"] == "networking.k8s.io/v1"
        spec = ingress["spec"]
        if values["ingress"]["className"]:
            assert spec["ingressClassName"] == values["ingress"]["className"]
        assert [t["secretName"] for t in spec.get("tls", [])] == [t["secretName"] for t in values["ingress"]["tls"]]
        service = rel.one("Service")["metadata"]["name"]
        for rule in spec["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": service, "port": {"name": "http"}}, path
        present.append("Ingress" + (" with TLS" if spec.get("tls") else ""))

    public = [doc for doc in rel.all("Ingress") if doc["metadata"]["name"].endswith("-public")]
    assert bool(public) == values["publicIngress"]["enabled"], "public Ingress"
    if public:
        spec = public[0]["spec"]
        service = rel.one("Service")["metadata"]["name"]
        want = [{"path": "/v1/forms", "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"name": "http"}}}}]
        want = want if values["publicIngress"]["forms"] else []
        if values["publicIngress"]["console"]:
            want.append({"path": "/console", "pathType": "Prefix",
                         "backend": {"service": {"name": service, "port": {"name": "http"}}}})
        for rule in spec["rules"]:
            assert rule["http"]["paths"] == want, rule["http"]["paths"]
        assert [rule["host"] for rule in spec["rules"]] == values["publicIngress"]["hosts"]
        present.append("public Ingress (" + ", ".join(p["path"] for p in want) + ")")

    policy = rel.maybe("NetworkPolicy")
    np = values["networkPolicy"]
    assert (policy is not None) == np["enabled"], "NetworkPolicy"
    if policy:
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"], spec["policyTypes"]
        for rule in spec["ingress"]:
            want_ports = [{"port": name, "protocol": "TCP"} for name, _ in expected_container_ports(values)]
            assert rule["ports"] == want_ports, rule["ports"]
        egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
        want = {(np["egress"]["postgresql"]["port"], "TCP")}
        want |= {(port, "TCP") for port in np["egress"]["smtp"]["ports"]}
        if np["egress"]["dns"]["enabled"]:
            want |= {(53, "UDP"), (53, "TCP")}
        assert want <= egress_ports, f"egress ports {sorted(egress_ports, key=str)} miss {sorted(want - egress_ports, key=str)}"
        present.append("NetworkPolicy")

    if values["serviceMonitor"]["enabled"]:
        present.append("ServiceMonitor")
    if values["autoscaling"]["enabled"]:
        present.append("HorizontalPodAutoscaler")
    return ", ".join(present) if present else "none enabled, none rendered"


# --- value sets that must fail, and derived renders ------------------------------------------


def expect_failure(chart: helm.Chart, values: dict[str, Any], needle: str) -> str:
    try:
        chart.render(values, name="posthorn", namespace=NAMESPACE, is_install=True)
    except helm.HelmError as error:
        message = str(error)
        assert needle in message, f"failed, but without {needle!r}: {message}"
        return message.strip().splitlines()[-1][:110]
    raise AssertionError("rendered, but should have failed")


def main() -> int:
    helm.disable_logging()
    chart = helm.Chart.load(CHART)
    ci_files = sorted((CHART / "ci").glob("*.yaml"))
    assert ci_files, "no value sets under helm/posthorn/ci"
    ci_values = {path.stem: yaml.safe_load(path.read_text()) or {} for path in ci_files}

    def lint(values: dict[str, Any] | None) -> Callable[[], str]:
        def run() -> str:
            with captured_stderr() as log:
                report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE,
                                   kube_version=f"v{KUBE_VERSION}")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            assert not problems, json.dumps(problems, indent=1) + "\n" + "".join(log)
            infos = [m["error"] for m in report["messages"]]
            return "; ".join(infos) if infos else "clean"
        return run

    check("helm lint --strict (chart defaults)", lint(None))
    for stem, values in ci_values.items():
        check(f"helm lint --strict ({stem})", lint(values))

    with tempfile.TemporaryDirectory(prefix="posthorn-chart-") as tmp:
        for stem, values in ci_values.items():
            releases: list[Release] = []

            def render(values: dict[str, Any] = values) -> str:
                releases.append(Release(chart, values))
                return f"{len(releases[0].docs)} documents"

            check(f"[{stem}] renders, every document is YAML", render)
            if not releases:
                continue
            rel = releases[0]
            check(f"[{stem}] documents have kind, name, namespace, labels", lambda: check_documents(rel))
            check(f"[{stem}] kubernetes-validate -k {KUBE_VERSION} --strict",
                  lambda: kubernetes_validate(rel, Path(tmp) / stem))
            check(f"[{stem}] ServiceMonitor shape", lambda: check_service_monitor(rel))
            check(f"[{stem}] secrets only through secretKeyRef", lambda: check_secrets(rel))
            check(f"[{stem}] securityContext", lambda: check_security(rel))
            check(f"[{stem}] deployment, probes, grace, config", lambda: check_deployment(rel))
            check(f"[{stem}] selectors", lambda: check_selectors(rel))
            check(f"[{stem}] optional resources follow their switches", lambda: check_optional(rel))

    base = ci_values.get("default-values", {})
    secrets = base.get("secrets", {})

    check("no secrets: rendering fails with a clear message",
          lambda: expect_failure(chart, {}, MISSING_SECRETS))
    check("no jwtSecret: rendering fails with a clear message",
          lambda: expect_failure(chart, {"secrets": {"databaseUrl": secrets.get("databaseUrl")}},
                                 "secrets.jwtSecret is required when existingSecret is empty"))
    check("short jwtSecret is refused",
          lambda: expect_failure(chart, deep_merge(base, {"secrets": {"jwtSecret": "short"}}),
                                 "at least 32 bytes"))
    check("a non-postgres databaseUrl is refused",
          lambda: expect_failure(chart, deep_merge(base, {"secrets": {"databaseUrl": "mysql://db/x"}}),
                                 "postgres://"))
    check("a literal secret in extraEnv is refused",
          lambda: expect_failure(chart, deep_merge(base, {"extraEnv": [
              {"name": "POSTHORN_JWT_SECRET", "value": "x" * 40}]}), "must not give POSTHORN_JWT_SECRET"))
    check("schema: unknown top-level key is refused",
          lambda: expect_failure(chart, deep_merge(base, {"replicas": 3}), "additional properties 'replicas'"))
    check("schema: a secret under config is refused",
          lambda: expect_failure(chart, deep_merge(base, {"config": {"POSTHORN_SMTP_URL": "smtp://x"}}),
                                 "additional properties 'POSTHORN_SMTP_URL'"))
    check("schema: POSTHORN_LISTEN under config is refused (the chart owns it)",
          lambda: expect_failure(chart, deep_merge(base, {"config": {"POSTHORN_LISTEN": "0.0.0.0:9"}}),
                                 "additional properties 'POSTHORN_LISTEN'"))
    check("schema: a typo in a nested object is refused",
          lambda: expect_failure(chart, deep_merge(base, {"autoscaling": {"enable": True}}),
                                 "additional properties 'enable'"))

    def existing_secret_without_values() -> str:
        rel = Release(chart, {"existingSecret": "posthorn"})
        assert rel.maybe("Secret") is None
        return "renders with only existingSecret"
    check("existingSecret alone is enough", existing_secret_without_values)

    def grace_derived() -> str:
        rel = Release(chart, deep_merge(base, {"shutdownGraceSeconds": 45}))
        tgps = rel.pod["terminationGracePeriodSeconds"]
        assert tgps == 55, f"terminationGracePeriodSeconds {tgps}"
        assert rel.configmap()["data"]["POSTHORN_SHUTDOWN_GRACE"] == "45s"
        return "shutdownGraceSeconds 45 -> POSTHORN_SHUTDOWN_GRACE=45s, terminationGracePeriodSeconds 55"
    check("terminationGracePeriodSeconds follows shutdownGraceSeconds", grace_derived)

    def config_rolls_pods() -> str:
        a = Release(chart, base)
        b = Release(chart, deep_merge(base, {"config": {"POSTHORN_WORKERS": 12}}))
        c = Release(chart, deep_merge(base, {"config": {"POSTHORN_WORKERS": None}}))
        get = lambda r: r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        assert get(a) != get(b), "changing config does not change checksum/config"
        assert b.configmap()["data"]["POSTHORN_WORKERS"] == "12"
        assert "POSTHORN_WORKERS" not in c.configmap()["data"], "a null config key is not dropped"
        return "checksum/config changes with config; a null key is dropped"
    check("a config change rolls the pods", config_rolls_pods)

    def other_release_name() -> str:
        rel = Release(chart, base, name="mail")
        names = {doc["kind"]: doc["metadata"]["name"] for doc in rel.docs}
        assert set(names.values()) == {"mail-posthorn"}, names
        assert rel.container["envFrom"][0]["configMapRef"]["name"] == "mail-posthorn"
        return "release mail -> mail-posthorn everywhere"
    check("resource names follow the release name", other_release_name)

    def as_subchart() -> str:
        Release(chart, deep_merge(base, {"global": {"imageRegistry": "x"}}))
        return "global values accepted"
    check("usable as a dependency (global values)", as_subchart)

    check("values.yaml, values.schema.json and README.md agree", check_docs)
    return 1 if failures else 0


def leaf_paths(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """The value paths the chart defines: it descends only where the schema declares properties
    (podSecurityContext, resources, ... are Kubernetes objects, documented whole)."""
    if isinstance(values, dict) and values and schema.get("properties"):
        out = []
        for key, value in values.items():
            sub = schema["properties"].get(key, {})
            out.extend(leaf_paths(value, sub, f"{prefix}.{key}" if prefix else key))
        return out
    return [prefix]


def schema_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if sub.get("properties"):
            assert sub.get("additionalProperties") is False, f"schema object {path} is not strict"
            out.extend(schema_paths(sub, path))
        else:
            out.append(path)
    return out


def check_docs() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    assert schema.get("additionalProperties") is False, "the schema's top level is not strict"
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    leaves = leaf_paths(values, schema)
    undocumented = [path for path in leaves if path not in documented]
    assert not undocumented, f"README.md documents no {undocumented}"
    known = set(leaves)
    config_keys = set(schema["properties"]["config"]["properties"])
    unknown = [p for p in schema_paths(schema)
               if p not in known and p != "global" and not p.startswith("config.")
               and not any(k.startswith(p + ".") for k in known)]
    assert not unknown, f"the schema has keys values.yaml lacks: {unknown}"
    missing = [p for p in known if p.split(".")[0] not in schema["properties"]]
    assert not missing, f"the schema lacks {missing}"
    not_in_readme = [key for key in config_keys if key not in readme]
    assert not not_in_readme, f"README.md does not name the config keys {not_in_readme}"
    assert "## Migrations" in readme, "README.md has no Migrations section"
    return f"{len(leaves)} values documented, {len(config_keys)} config keys named"


if __name__ == "__main__":
    sys.exit(main())

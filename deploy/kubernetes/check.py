#!/usr/bin/env python3
"""What kubernetes-validate cannot check in deploy/kubernetes/, checked here offline.

kubernetes-validate knows the built-in kinds only: the Prometheus Operator's
ServiceMonitor and PrometheusRule (CRDs) are checked here field by field, against the
parts of their CRD schema these manifests use. Then the manifests against each other and
against the relay:

- every resource is listed in kustomization.yaml, in the namespace it names;
- the StatefulSet's serviceName is the headless Service, whose name and namespace are
  the host of `[mesh] peers_dns`; the Services select the pods' labels and name ports
  the container has;
- the probes ask for paths the relay serves (docs/openapi.yaml);
- the ServiceMonitor selects the headless Service, scrapes a port it has, takes `job`
  from a label whose value is the job the alert rules select, reads basic auth from keys
  the Secret has;
- the PrometheusRule holds exactly the groups of docker/prometheus/alerts.yml, and
  promtool accepts them (`promtool check rules` on the spec);
- the init container's script, run with /bin/sh against the relay binary given, joins
  the ConfigMap's file and the Secret's values into a configuration that
  `sdk_relay check-config` accepts, with the Secret's values in [auth].

    python3 deploy/kubernetes/check.py path/to/sdk_relay
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
failures: list[str] = []


def check(condition: bool, message: str) -> None:
    if not condition:
        failures.append(message)


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((HERE / name).read_text()) if d]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def require(obj: dict, path: str, kind: type) -> object:
    """The value at a dotted `path` of `obj`, which must be of `kind`."""
    value: object = obj
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            failures.append(f"missing {path}")
            return None
        value = value[key]
    check(isinstance(value, kind), f"{path} must be a {kind.__name__}, is {type(value).__name__}")
    return value


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/debug/sdk_relay")
    kustomization = yaml.safe_load((HERE / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    docs: list[dict] = []
    for name in kustomization["resources"]:
        for doc in load(name):
            docs.append(doc)
            if doc["kind"] != "Namespace":
                check(doc["metadata"].get("namespace") == namespace,
                      f"{name}: {doc['kind']} {doc['metadata']['name']} not in namespace {namespace}")
    listed = set(kustomization["resources"])
    for path in HERE.glob("*.yaml"):
        if path.name != "kustomization.yaml":
            check(path.name in listed, f"{path.name} is not listed in kustomization.yaml")

    statefulset = one(docs, "StatefulSet")
    configmap = one(docs, "ConfigMap")
    secret = one(docs, "Secret")
    services = [d for d in docs if d["kind"] == "Service"]
    headless = [s for s in services if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1, "one headless Service")
    headless = headless[0]
    pod = statefulset["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    relay = next(c for c in pod["spec"]["containers"] if c["name"] == "relay")
    container_ports = {p["name"] for p in relay["ports"]}

    # The StatefulSet, the Services and DNS discovery agree.
    check(statefulset["spec"]["serviceName"] == headless["metadata"]["name"],
          "the StatefulSet's serviceName is the headless Service")
    check(headless["spec"].get("publishNotReadyAddresses") is True,
          "the headless Service publishes pods before they are ready (they find peers first)")
    relay_toml = configmap["data"]["relay.toml"]
    dns = re.search(r'peers_dns\s*=\s*\["([^"]+)"\]', relay_toml)
    check(dns is not None, "relay.toml sets [mesh] peers_dns")
    if dns:
        want = f"{headless['metadata']['name']}.{namespace}.svc.cluster.local:8090"
        check(dns.group(1) == want, f"peers_dns is {dns.group(1)}, the headless Service is {want}")
    for service in services:
        selector = service["spec"]["selector"]
        check(all(pod_labels.get(k) == v for k, v in selector.items()),
              f"Service {service['metadata']['name']} selects the relay pods")
        for port in service["spec"]["ports"]:
            check(port["targetPort"] in container_ports,
                  f"Service {service['metadata']['name']} targets port {port['targetPort']}, which the container names")

    # Probes ask for documented paths.
    openapi = yaml.safe_load((ROOT / "docs/openapi.yaml").read_text())
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        path = relay[probe]["httpGet"]["path"]
        check(path in openapi["paths"], f"{probe} path {path} is served (docs/openapi.yaml)")
    check(relay["livenessProbe"]["httpGet"]["path"] == "/health/live", "liveness on /health/live")
    check(relay["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readiness on /health/ready")

    # ServiceMonitor (CRD monitoring.coreos.com/v1), structurally.
    monitor = one(docs, "ServiceMonitor")
    check(monitor["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    selector = require(monitor, "spec.selector.matchLabels", dict) or {}
    endpoints = require(monitor, "spec.endpoints", list) or []
    job_label = require(monitor, "spec.jobLabel", str)
    check(all(headless["metadata"]["labels"].get(k) == v for k, v in selector.items()),
          "the ServiceMonitor selects the headless Service")
    others = [s for s in services if s is not headless
              and all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())]
    check(not others, "the ServiceMonitor selects only the headless Service (each pod once)")
    check(headless["metadata"]["labels"].get(job_label) == "sdk_relay",
          f"the headless Service's {job_label} label is the job the alert rules select (sdk_relay)")
    service_ports = {p["name"] for p in headless["spec"]["ports"]}
    allowed_endpoint_keys = {"port", "path", "interval", "scrapeTimeout", "basicAuth", "relabelings", "scheme"}
    for endpoint in endpoints:
        check(set(endpoint) <= allowed_endpoint_keys, f"ServiceMonitor endpoint keys {sorted(endpoint)}")
        check(endpoint.get("port") in service_ports, f"ServiceMonitor scrapes port {endpoint.get('port')}")
        check(endpoint.get("path") == "/metrics/prometheus", "ServiceMonitor scrapes /metrics/prometheus")
        check(endpoint.get("path") in openapi["paths"], "the scraped path is served")
        for field in ("interval", "scrapeTimeout"):
            check(re.fullmatch(r"\d+(ms|s|m|h)", str(endpoint.get(field, "1s"))) is not None,
                  f"ServiceMonitor {field} is a Prometheus duration")
        for part in ("username", "password"):
            ref = endpoint.get("basicAuth", {}).get(part, {})
            check(ref.get("name") == secret["metadata"]["name"] and ref.get("key") in secret["stringData"],
                  f"ServiceMonitor basicAuth {part} reads a key of the Secret")
        for relabel in endpoint.get("relabelings", []):
            check(isinstance(relabel.get("sourceLabels"), list) and isinstance(relabel.get("targetLabel"), str),
                  "ServiceMonitor relabeling has sourceLabels and targetLabel")

    # PrometheusRule (CRD monitoring.coreos.com/v1), structurally and by promtool.
    rule = one(docs, "PrometheusRule")
    check(rule["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
    groups = require(rule, "spec.groups", list) or []
    for group in groups:
        check(isinstance(group.get("name"), str) and isinstance(group.get("rules"), list),
              "each rule group has a name and rules")
        for r in group.get("rules", []):
            check(("alert" in r) != ("record" in r) and isinstance(r.get("expr"), str),
                  f"rule {r.get('alert') or r.get('record')}: one of alert/record, and expr")
    source = yaml.safe_load((ROOT / "docker/prometheus/alerts.yml").read_text())["groups"]
    check(groups == source, "the PrometheusRule's groups are docker/prometheus/alerts.yml's")
    with tempfile.TemporaryDirectory() as tmp:
        rules_file = Path(tmp) / "rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": groups}))
        promtool = subprocess.run(["promtool", "check", "rules", str(rules_file)],
                                  capture_output=True, text=True)
        check(promtool.returncode == 0, f"promtool rejects the PrometheusRule's groups:\n{promtool.stdout}{promtool.stderr}")

        # The init container's script against the real binary.
        init = next(c for c in pod["spec"]["initContainers"] if c["name"] == "config")
        script = init["command"][-1]
        template = Path(tmp) / "config"
        out = Path(tmp) / "run"
        template.mkdir()
        out.mkdir()
        (template / "relay.toml").write_text(relay_toml)
        script = (script.replace("/config/", f"{template}/")
                        .replace("/run/sdk_relay/", f"{out}/")
                        .replace("/usr/local/bin/sdk_relay", binary))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "SDK_RELAY_CONFIG": str(out / "relay.toml"),
               "SDK_RELAY_RELAY_ID": "sdk-relay-0",
               "SDK_RELAY_ADVERTISE_ADDR": "10.1.2.3:8090",
               "SDK_RELAY_DATA_DIR": str(Path(tmp) / "data"),
               "HTTP_BASIC_USER": secret["stringData"]["http-basic-user"],
               "HTTP_BASIC_PASSWORD": secret["stringData"]["http-basic-password"],
               "MESH_TOKEN": secret["stringData"]["mesh-token"],
               "WS_TOKENS": "token-a,token-b"}
        run = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        check(run.returncode == 0, f"the init container's script fails:\n{run.stdout}{run.stderr}")
        if run.returncode == 0:
            effective = subprocess.run([binary, "check-config"], env=env, capture_output=True,
                                       text=True, timeout=30)
            shown = effective.stdout
            check('ws_tokens = ["***", "***"]' in shown, f"two wallet tokens in [auth]:\n{shown}")
            check('http_basic_user = "operator"' in shown, "the basic-auth user in [auth]")
            check("sdk-relay-peers.sdk-relay.svc.cluster.local:8090" in shown, "peers_dns in the effective config")
        env["MESH_TOKEN"] = 'has"quote'
        bad = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        check(bad.returncode != 0, "a secret value with a quote is refused, not written into TOML")

    for failure in failures:
        print(f"deploy/kubernetes: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("deploy/kubernetes: ServiceMonitor and PrometheusRule valid; manifests consistent; "
          "init script yields a configuration the relay accepts")
    return 0


if __name__ == "__main__":
    sys.exit(main())

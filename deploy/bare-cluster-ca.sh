#!/usr/bin/env bash
# For a cluster without cert-manager or OpenShift: create a self-signed CA and a serving certificate for the
# webhook's Service, store them in the kaudit-webhook-tls Secret, and set the CA as the webhook's caBundle.
#   deploy/bare-cluster-ca.sh [--dry-run DIR]
# With --dry-run the certificates and the patched ValidatingWebhookConfiguration are written to DIR and nothing is
# applied (used by the tests). Re-run before the certificate expires (365 days) to rotate it: the webhook picks up
# the new pair without a restart.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace=kaudit-system
service=kaudit-webhook
dry_run=""
if [ "${1:-}" = "--dry-run" ]; then dry_run="${2:?--dry-run needs a directory}"; fi
work="${dry_run:-$(mktemp -d)}"
mkdir -p "$work"
[ -n "$dry_run" ] || trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=kaudit webhook CA" -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$service.$namespace.svc" \
  -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
  "$service" "$namespace" "$service" "$namespace" > "$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 365 \
  -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null
ca_bundle="$(base64 -w0 < "$work/ca.crt")"
sed "s|caBundle: \"\"|caBundle: \"$ca_bundle\"|" "$here/base/validatingwebhookconfiguration.yaml" \
  > "$work/validatingwebhookconfiguration.yaml"

if [ -n "$dry_run" ]; then
  echo "wrote $work/{ca.crt,tls.crt,tls.key,validatingwebhookconfiguration.yaml}"
  exit 0
fi
kubectl apply -k "$here/base"
kubectl -n "$namespace" create secret tls kaudit-webhook-tls --cert="$work/tls.crt" --key="$work/tls.key" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$work/validatingwebhookconfiguration.yaml"

#!/usr/bin/env bash
# Make the files the local overlay's secretGenerator reads: random passwords for every store's
# administrator, each service's (and the storefront's) own accounts (a user and a random password per store, which the
# platform-bootstrap job creates), a fresh Ed25519 signing key and the admin bootstrap.
#   deploy/kubernetes/overlays/local/make-secrets.sh [DIR]    (default: secrets/ beside this script)
# The files stay out of git (secrets/.gitignore). An existing set is kept as it is: the stores'
# volumes were initialised with those passwords; delete the files and the PersistentVolumeClaims
# together to start over.
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")" && pwd)/secrets}"
mkdir -p "$dir"
files=(postgres-admin.env redis-auth.env rabbitmq-admin.env couchbase-admin.env grafana-admin.env
  admin-bootstrap.env jwt-signing-key.pem service-user.env service-product.env service-cart.env
  service-order.env service-payment.env payment-provider.env web-storefront.env)

present=0
for file in "${files[@]}"; do [ -e "$dir/$file" ] && present=$((present + 1)); done
if [ "$present" = "${#files[@]}" ]; then
  echo "secrets already made in $dir (kept)"
  exit 0
elif [ "$present" != 0 ]; then
  echo "only $present of ${#files[@]} secret files in $dir: delete them all, or restore the rest" >&2
  exit 1
fi

command -v openssl >/dev/null 2>&1 || { echo "openssl is needed to make the secrets" >&2; exit 1; }
umask 077
# Hex: safe inside a URL without escaping.
password() { openssl rand -hex 24; }
postgres_password=$(password)
redis_password=$(password)
rabbitmq_password=$(password)
couchbase_password=$(password)

printf 'POSTGRES_PASSWORD=%s\n' "$postgres_password" >"$dir/postgres-admin.env"
printf 'REDIS_PASSWORD=%s\n' "$redis_password" >"$dir/redis-auth.env"
printf 'RABBITMQ_DEFAULT_USER=ecommerce\nRABBITMQ_DEFAULT_PASS=%s\n' "$rabbitmq_password" \
  >"$dir/rabbitmq-admin.env"
printf 'COUCHBASE_USERNAME=Administrator\nCOUCHBASE_PASSWORD=%s\n' "$couchbase_password" \
  >"$dir/couchbase-admin.env"
printf 'GF_SECURITY_ADMIN_USER=admin\nGF_SECURITY_ADMIN_PASSWORD=%s\n' "$(password)" \
  >"$dir/grafana-admin.env"
printf 'ADMIN_EMAIL=admin@example.com\nADMIN_PASSWORD=%s\n' "$(password)" >"$dir/admin-bootstrap.env"
openssl genpkey -algorithm ed25519 -out "$dir/jwt-signing-key.pem"

# Each service's credentials: the variables it reads, nothing more, each an account of its own
# with a password of its own (the platform-bootstrap job makes the accounts from these Secrets).
postgres() { local pw; pw=$(password); echo "postgresql://${1}:${pw}@postgres:5432"; }
redis() { local pw; pw=$(password); echo "redis://${1}:${pw}@redis:6379/0"; }
amqp() { local pw; pw=$(password); echo "amqp://${1}:${pw}@rabbitmq:5672/"; }
printf 'POSTGRES_URL=%s\nREDIS_URL=%s\n' "$(postgres service_user)" "$(redis service-user)" \
  >"$dir/service-user.env"
printf 'POSTGRES_URL=%s\nREDIS_URL=%s\nAMQP_URL=%s\n' "$(postgres service_product)" \
  "$(redis service-product)" "$(amqp service-product)" >"$dir/service-product.env"
printf 'AMQP_URL=%s\nCOUCHBASE_USERNAME=Administrator\nCOUCHBASE_PASSWORD=%s\n' \
  "$(amqp service-cart)" "$couchbase_password" >"$dir/service-cart.env"
printf 'POSTGRES_URL=%s\nAMQP_URL=%s\n' "$(postgres service_order)" "$(amqp service-order)" \
  >"$dir/service-order.env"
printf 'POSTGRES_URL=%s\nAMQP_URL=%s\n' "$(postgres service_payment)" "$(amqp service-payment)" \
  >"$dir/service-payment.env"
printf 'POSTGRES_URL=%s\n' "$(postgres payment_provider)" >"$dir/payment-provider.env"
printf 'REDIS_URL=%s\n' "$(redis web-storefront)" >"$dir/web-storefront.env"

echo "made ${#files[@]} secret files in $dir"

#!/usr/bin/env bash
# One-shot initialisation of the single-node Couchbase cluster and the carts bucket.
# Idempotent: each step first asks whether it was already done, so restarts are no-ops.
set -euo pipefail

host="${COUCHBASE_HOST:-couchbase}"
user="${COUCHBASE_USERNAME:?COUCHBASE_USERNAME is required}"
password="${COUCHBASE_PASSWORD:?COUCHBASE_PASSWORD is required}"
bucket="${COUCHBASE_BUCKET:-carts}"
cluster_ram="${COUCHBASE_RAM_MB:-512}"
bucket_ram="${COUCHBASE_BUCKET_RAM_MB:-256}"
cli="${COUCHBASE_CLI:-/opt/couchbase/bin/couchbase-cli}"

log() { printf 'couchbase-init: %s\n' "$*"; }

for _ in $(seq 1 60); do
  curl -fsS -o /dev/null "http://${host}:8091/pools" && break
  log "waiting for ${host}:8091"
  sleep 2
done

if curl -fsS -o /dev/null -u "${user}:${password}" "http://${host}:8091/pools/default"; then
  log "cluster already initialised"
else
  log "initialising cluster (data, index, query; ${cluster_ram} MB)"
  "${cli}" cluster-init -c "${host}:8091" \
    --cluster-username "${user}" --cluster-password "${password}" \
    --cluster-name ecommerce \
    --services data,index,query \
    --cluster-ramsize "${cluster_ram}" --cluster-index-ramsize 256 \
    --index-storage-setting default
fi

# Listed first, then searched: `bucket-list | grep -q` under pipefail fails when grep stops
# reading early and the CLI dies of SIGPIPE, which would try to create an existing bucket.
buckets=$("${cli}" bucket-list -c "${host}:8091" -u "${user}" -p "${password}")
if grep -qx "${bucket}" <<<"${buckets}"; then
  log "bucket ${bucket} already exists"
else
  log "creating bucket ${bucket} (${bucket_ram} MB)"
  "${cli}" bucket-create -c "${host}:8091" -u "${user}" -p "${password}" \
    --bucket "${bucket}" --bucket-type couchbase --bucket-ramsize "${bucket_ram}" \
    --bucket-replica 0 --enable-flush 0 --wait
fi

# The bucket is usable for KV once its vBuckets are active on the node.
for _ in $(seq 1 60); do
  status=$(curl -fsS -u "${user}:${password}" "http://${host}:8091/pools/default/buckets/${bucket}" \
    | grep -o '"status":"[a-z]*"' | head -n1 || true)
  if [ "${status}" = '"status":"healthy"' ]; then
    log "bucket ${bucket} is healthy"
    exit 0
  fi
  log "waiting for bucket ${bucket} (${status:-no status yet})"
  sleep 2
done
log "bucket ${bucket} did not become healthy"
exit 1

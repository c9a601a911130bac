#!/bin/sh
# One-shot: create (or overwrite) the Kibana data view over the platform's log indices, so the
# logs are searchable in Discover without any clicking. Safe to run again.
set -eu

kibana="${KIBANA_URL:-http://kibana:5601}"

curl -fsS -X POST "${kibana}/api/data_views/data_view" \
  -H 'kbn-xsrf: true' \
  -H 'Content-Type: application/json' \
  -d '{
        "override": true,
        "data_view": {
          "id": "ecommerce-logs",
          "name": "ecommerce logs",
          "title": "ecommerce-logs-*",
          "timeFieldName": "@timestamp"
        }
      }' >/dev/null

curl -fsS -X POST "${kibana}/api/data_views/default" \
  -H 'kbn-xsrf: true' \
  -H 'Content-Type: application/json' \
  -d '{"data_view_id": "ecommerce-logs", "force": true}' >/dev/null

echo "kibana-init: data view ecommerce-logs-* is ready"

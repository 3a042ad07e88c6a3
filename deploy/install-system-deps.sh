#!/usr/bin/env bash
# Install the Debian packages hallstats runs on, only when something is missing.
# ClickHouse server (18.16) and Prometheus/promtool come from Debian; Kafka is
# resolved from Maven Central by `hallstats stack up`, which needs Java 17 and Maven.
set -euo pipefail
need=()
command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/bin/clickhouse ] || need+=(clickhouse-server clickhouse-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]}; run as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
# The packages' service units must not grab our ports; we start our own processes.
systemctl disable --now prometheus prometheus-node-exporter clickhouse-server >/dev/null 2>&1 || true

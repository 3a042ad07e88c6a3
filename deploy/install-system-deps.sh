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
# TLS certificates for the secured Kafka stack and its tests.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Bulletin rendering (issue 5): a CJK font for the chart and the DOCX, LibreOffice to
# check the DOCX (tests convert it to PDF) and pdftotext to read that PDF back.
# Without recommends: about 140 MB to download, 340 MiB installed, ~30 s.
lean=()
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || lean+=(fonts-noto-cjk)
command -v soffice >/dev/null 2>&1 || lean+=(libreoffice-writer-nogui)
command -v pdftotext >/dev/null 2>&1 || lean+=(poppler-utils)
# Replicated ClickHouse (18.16) coordinates through ZooKeeper; only its jar is used
# (no service: the stack starts its own on 127.0.0.1).
[ -f /usr/share/java/zookeeper.jar ] || lean+=(zookeeper)
if [ ${#need[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} ${lean[*]}; run as root: apt-get install -y ${need[*]} ${lean[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]} ${lean[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#lean[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
fi
# The packages' service units must not grab our ports; we start our own processes.
systemctl disable --now prometheus prometheus-node-exporter clickhouse-server zookeeper >/dev/null 2>&1 || true

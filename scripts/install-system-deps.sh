#!/usr/bin/env bash
# Installs bubblewrap and socat (the sandbox's jail and its egress bridge), Prometheus and
# Alertmanager (with promtool and amtool), Chromium for the console's browser tests, wrk for the
# API benchmark (B7), PgBouncer for the transaction-pooling test and apparmor_parser for the
# sandbox's Kubernetes AppArmor profile, from the system package
# manager when they are missing and this machine allows it. `--sandbox` installs only the first two
# (what `make run` needs).
# Never fails the build: tests that need them skip with a clear message when they are absent.
set -u
jail=()
command -v bwrap >/dev/null 2>&1 || jail+=(bubblewrap)
command -v socat >/dev/null 2>&1 || jail+=(socat)
sandbox_only=0
[ "${1:-}" = "--sandbox" ] && sandbox_only=1
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
browser=()
[ -x /usr/bin/chromium ] || browser+=(chromium)
tools=()
[ -x /usr/bin/wrk ] || tools+=(wrk)
[ -x /usr/sbin/pgbouncer ] || tools+=(pgbouncer)
command -v apparmor_parser >/dev/null 2>&1 || tools+=(apparmor)
if [ $sandbox_only -eq 1 ]; then need=(); browser=(); tools=(); fi
[ ${#jail[@]} -eq 0 ] && [ ${#need[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && [ ${#tools[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-get not found: install ${jail[*]} ${need[*]} yourself (the sandbox jail; the Prometheus/Alertmanager tests)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "not root: install ${jail[*]} ${need[*]} yourself (the sandbox jail; the Prometheus/Alertmanager tests)" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing ${jail[*]} ${need[*]} ${browser[*]} ${tools[*]} ..."
timeout 600 $sudo apt-get update -qq >/dev/null 2>&1 || true
# --no-install-recommends keeps it small; the services are not started (policy-rc.d style guard).
rc=0
if [ ${#jail[@]} -gt 0 ]; then
  timeout 600 $sudo apt-get install -y -qq --no-install-recommends "${jail[@]}" >/dev/null 2>&1 || {
    rc=$?
    echo "could not install ${jail[*]}: the sandbox stays unready (or set COO_SANDBOX_ISOLATION=weak)" >&2
  }
fi
if [ ${#need[@]} -gt 0 ]; then
  timeout 900 $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1
  rc=$?
fi
# Chromium on its own, so that a system without it still gets Prometheus and Alertmanager.
if [ ${#browser[@]} -gt 0 ]; then
  timeout 900 $sudo apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null 2>&1 || {
    rc=$?
    echo "could not install chromium: the console's browser tests are skipped" >&2
  }
fi
if [ ${#tools[@]} -gt 0 ]; then
  timeout 600 $sudo apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null 2>&1 ||
    echo "could not install ${tools[*]}: B7 uses its own load generator, the tests needing them are skipped" >&2
fi
# Debian starts the daemons on install; COO's tests run their own instances.
for svc in prometheus prometheus-alertmanager pgbouncer; do
  pkill -x "$svc" >/dev/null 2>&1 || true
done
exit $rc

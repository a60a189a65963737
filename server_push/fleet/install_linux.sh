#!/bin/sh
# The epns agent installer for Linux, rendered by the epns server that serves
# it (server_push/fleet/installer.py). The one-line command that
# `epns-server enrol-token create` prints runs it, after checking the server's
# CA against the fingerprint pinned in that command and fetching this script
# over TLS verified with that CA:
#     sh install.sh --ca CA_FILE --token TOKEN
# It installs the agent package the server offers (the .deb with apt or
# dpkg, else the single-file agent), enrols with the token (the server makes
# the agent id of the host name) and starts the service. Run again, it
# upgrades the package and keeps the machine's identity.
# EPNS_INSTALL_ROOT=DIR (for tests): install under DIR instead of /, as any
# user, the single-file agent only, and start nothing.
set -eu

SERVER=@SERVER@
DEB=@DEB@
DEB_SHA256=@DEB_SHA256@
PYZ=@PYZ@
PYZ_SHA256=@PYZ_SHA256@
UNIT=@UNIT@
UNIT_SHA256=@UNIT_SHA256@

say() { echo "epns-install: $*" >&2; }
die() { say "$*"; exit 1; }

CA=
TOKEN=
while [ $# -gt 0 ]; do
    case "$1" in
        --ca) CA=${2:-}; shift 2 ;;
        --token) TOKEN=${2:-}; shift 2 ;;
        *) die "unknown argument: $1 (usage: install.sh --ca CA_FILE --token TOKEN)" ;;
    esac
done
[ -n "$CA" ] && [ -f "$CA" ] || die "--ca CA_FILE is needed: the fleet CA the command checked"
[ -n "$TOKEN" ] || die "--token TOKEN is needed"

ROOT=${EPNS_INSTALL_ROOT:-}
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run it as root (sudo)"
fi
CONF="$ROOT/etc/epns"
BIN="$ROOT/usr/local/bin/epns-agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch NAME SHA256 OUT: a file the server offers, over TLS verified with the
# pinned CA, and checked against the digest this script announced.
fetch() {
    curl -fsS --proto =https --cacert "$CA" -o "$3" "$SERVER/install/packages/$1" \
        || die "cannot download $1 from $SERVER"
    echo "$2  $3" | sha256sum -c - >/dev/null 2>&1 \
        || die "$1 is not the file the server announced (its SHA-256 differs)"
}

if [ -z "$ROOT" ] && [ -n "$DEB" ] && command -v dpkg >/dev/null 2>&1; then
    fetch "$DEB" "$DEB_SHA256" "$work/$DEB"
    if command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$work/$DEB" >&2 \
            || die "apt-get could not install $DEB"
    else
        dpkg -i "$work/$DEB" >&2 || die "dpkg could not install $DEB"
    fi
    AGENT=$(command -v epns-agent) || die "the package installed no epns-agent command"
    say "installed $DEB"
elif [ -n "$PYZ" ]; then
    command -v python3 >/dev/null 2>&1 \
        || die "the single-file agent needs python3 (3.11 or later), and there is none"
    fetch "$PYZ" "$PYZ_SHA256" "$work/epns-agent"
    mkdir -p "$(dirname "$BIN")"
    cp "$work/epns-agent" "$BIN.new" && chmod 0755 "$BIN.new" && mv "$BIN.new" "$BIN"
    AGENT=$BIN
    say "installed the single-file agent: $BIN"
else
    die "the server offers only a .deb, and this machine has no dpkg: ask for the single-file agent"
fi

if [ -f "$CONF/agent.crt" ]; then
    say "enrolled already ($CONF/agent.toml): identity kept"
elif [ -f "$CONF/enrolment.json" ]; then
    "$AGENT" enrol --resume --dir "$CONF"
else
    "$AGENT" enrol --server "$SERVER" --token "$TOKEN" --ca "$CA" --dir "$CONF"
fi

if [ -n "$ROOT" ]; then
    say "EPNS_INSTALL_ROOT is set: no service started; run  $AGENT run --config $CONF/agent.toml"
    exit 0
fi
# The service runs as epns: it reads the key, and renews the identity by
# writing new files beside the old ones (docs/identity.md), so the directory
# (0700 as enrol makes it) is the epns group's too.
id epns >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin epns
chgrp epns "$CONF" "$CONF/agent.key" && chmod 0770 "$CONF" && chmod 0640 "$CONF/agent.key"
if [ -n "$UNIT" ] && [ ! -f /lib/systemd/system/epns-agent.service ] \
        && [ ! -f /usr/lib/systemd/system/epns-agent.service ]; then
    fetch "$UNIT" "$UNIT_SHA256" "$work/$UNIT"
    cp "$work/$UNIT" /etc/systemd/system/epns-agent.service
fi
if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
    say "no systemd here: start the agent with  $AGENT run --config $CONF/agent.toml"
    exit 0
fi
systemctl daemon-reload
if ! systemctl cat epns-agent >/dev/null 2>&1; then
    die "enrolled, but there is no epns-agent.service to start: the server's packages_dir" \
        "should hold one for the single-file agent (systemd/epns-agent.service)"
fi
systemctl enable epns-agent >/dev/null 2>&1
systemctl restart epns-agent
say "service epns-agent started: epns-agent status --config $CONF/agent.toml"

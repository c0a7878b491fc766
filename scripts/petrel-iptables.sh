#!/bin/sh
# Installs or removes the iptables rules that send a pod's TCP traffic through petrel running
# as its sidecar, the way istio-iptables does: every outbound connection is REDIRECTed to the
# outbound port (15001), every inbound one to the inbound port (15006). petrel finds where a
# connection was going with the original_dst listener filter (docs/sidecar.md).
#
#   scripts/petrel-iptables.sh install [options]
#   scripts/petrel-iptables.sh clean   [options]
#
# Options (each also read from the environment variable in brackets):
#   -n NETNS   run inside this network namespace (`ip netns exec`)                [PT_NETNS]
#   -u UID     petrel's user id: its own connections are never redirected         [PT_PROXY_UID]
#              (default 1337); several ids separated by commas
#   -g GID     petrel's group id, excluded the same way (optional)                 [PT_PROXY_GID]
#   -p PORT    the outbound port (default 15001)                                   [PT_OUTBOUND_PORT]
#   -z PORT    the inbound port (default 15006)                                    [PT_INBOUND_PORT]
#   -a PORTS   petrel's admin and other own ports: inbound connections to them are
#              not redirected (default 15000), comma separated                      [PT_EXCLUDE_INBOUND_PORTS]
#   -i PORTS   inbound ports to redirect, comma separated, or * for all (default *)  [PT_INBOUND_PORTS]
#   -o PORTS   outbound destination ports never redirected, comma separated        [PT_EXCLUDE_OUTBOUND_PORTS]
#   -x CIDRS   outbound destinations never redirected, comma separated             [PT_EXCLUDE_CIDRS]
#   -6         do the same for IPv6 with ip6tables
#
# Both subcommands are idempotent: install first removes what an earlier install left (its
# own chains and the jumps to them, nothing else), then adds the rules again; clean removes
# them and succeeds when there is nothing to remove. Only the nat table is used.
set -eu

usage() {
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in install | clean) ;; *) usage ;; esac

netns=${PT_NETNS:-}
uids=${PT_PROXY_UID:-1337}
gids=${PT_PROXY_GID:-}
outbound_port=${PT_OUTBOUND_PORT:-15001}
inbound_port=${PT_INBOUND_PORT:-15006}
exclude_inbound=${PT_EXCLUDE_INBOUND_PORTS:-15000}
inbound_ports=${PT_INBOUND_PORTS:-*}
exclude_outbound=${PT_EXCLUDE_OUTBOUND_PORTS:-}
exclude_cidrs=${PT_EXCLUDE_CIDRS:-}
ipv6=0
while getopts n:u:g:p:z:a:i:o:x:6h opt; do
    case "$opt" in
    n) netns=$OPTARG ;;
    u) uids=$OPTARG ;;
    g) gids=$OPTARG ;;
    p) outbound_port=$OPTARG ;;
    z) inbound_port=$OPTARG ;;
    a) exclude_inbound=$OPTARG ;;
    i) inbound_ports=$OPTARG ;;
    o) exclude_outbound=$OPTARG ;;
    x) exclude_cidrs=$OPTARG ;;
    6) ipv6=1 ;;
    *) usage ;;
    esac
done

is_port() {
    case "$1" in '' | *[!0-9]*) return 1 ;; esac
    [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}
check_ports() { # name list
    list=$(echo "$2" | tr ',' ' ')
    for p in $list; do
        is_port "$p" || { echo "petrel-iptables: $1: \"$p\" is not a port" >&2; exit 2; }
    done
}
is_port "$outbound_port" || { echo "petrel-iptables: -p: \"$outbound_port\" is not a port" >&2; exit 2; }
is_port "$inbound_port" || { echo "petrel-iptables: -z: \"$inbound_port\" is not a port" >&2; exit 2; }
check_ports -a "$exclude_inbound"
check_ports -o "$exclude_outbound"
[ "$inbound_ports" = "*" ] || check_ports -i "$inbound_ports"
for id in $(echo "$uids,$gids" | tr ',' ' '); do
    case "$id" in *[!0-9]*) echo "petrel-iptables: \"$id\" is not a numeric id" >&2; exit 2 ;; esac
done

run() { # the command, inside the namespace when one is named
    if [ -n "$netns" ]; then
        ip netns exec "$netns" "$@"
    else
        "$@"
    fi
}

# petrel's chains: PT_OUTPUT and PT_INBOUND decide, PT_REDIRECT and PT_IN_REDIRECT act.
CHAINS="PT_OUTPUT PT_INBOUND PT_REDIRECT PT_IN_REDIRECT"

clean_family() { # iptables|ip6tables
    ipt=$1
    # The jumps from the built-in chains, as many times as they are there.
    while run "$ipt" -t nat -D OUTPUT -p tcp -j PT_OUTPUT 2>/dev/null; do :; done
    while run "$ipt" -t nat -D PREROUTING -p tcp -j PT_INBOUND 2>/dev/null; do :; done
    for c in $CHAINS; do
        run "$ipt" -t nat -F "$c" 2>/dev/null || true
    done
    for c in $CHAINS; do
        run "$ipt" -t nat -X "$c" 2>/dev/null || true
    done
}

install_family() { # iptables|ip6tables loopback
    ipt=$1
    lo=$2
    for c in $CHAINS; do
        run "$ipt" -t nat -N "$c"
    done
    run "$ipt" -t nat -A PT_REDIRECT -p tcp -j REDIRECT --to-ports "$outbound_port"
    run "$ipt" -t nat -A PT_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$inbound_port"

    # Inbound: everything that arrives for the pod, but petrel's own ports.
    for p in $(echo "$exclude_inbound" | tr ',' ' '); do
        run "$ipt" -t nat -A PT_INBOUND -p tcp --dport "$p" -j RETURN
    done
    if [ "$inbound_ports" = "*" ]; then
        run "$ipt" -t nat -A PT_INBOUND -p tcp -j PT_IN_REDIRECT
    else
        for p in $(echo "$inbound_ports" | tr ',' ' '); do
            run "$ipt" -t nat -A PT_INBOUND -p tcp --dport "$p" -j PT_IN_REDIRECT
        done
    fi

    # Outbound: petrel's own connections go where they were going (else every upstream
    # connection would come back to petrel), then loopback, the excluded destinations and
    # ports; everything else goes to the outbound port.
    for id in $(echo "$uids" | tr ',' ' '); do
        run "$ipt" -t nat -A PT_OUTPUT -m owner --uid-owner "$id" -j RETURN
    done
    for id in $(echo "$gids" | tr ',' ' '); do
        run "$ipt" -t nat -A PT_OUTPUT -m owner --gid-owner "$id" -j RETURN
    done
    # The pod talking to itself over loopback is not intercepted (as istio-iptables does for
    # the application's own traffic).
    run "$ipt" -t nat -A PT_OUTPUT -o lo -j RETURN
    run "$ipt" -t nat -A PT_OUTPUT -d "$lo" -j RETURN
    for cidr in $(echo "$exclude_cidrs" | tr ',' ' '); do
        run "$ipt" -t nat -A PT_OUTPUT -d "$cidr" -j RETURN
    done
    for p in $(echo "$exclude_outbound" | tr ',' ' '); do
        run "$ipt" -t nat -A PT_OUTPUT -p tcp --dport "$p" -j RETURN
    done
    run "$ipt" -t nat -A PT_OUTPUT -j PT_REDIRECT

    run "$ipt" -t nat -A OUTPUT -p tcp -j PT_OUTPUT
    run "$ipt" -t nat -A PREROUTING -p tcp -j PT_INBOUND
}

families="iptables"
[ "$ipv6" = 1 ] && families="iptables ip6tables"
for ipt in $families; do
    command -v "$ipt" >/dev/null 2>&1 || { echo "petrel-iptables: $ipt not found (apt-get install iptables)" >&2; exit 1; }
done

for ipt in $families; do
    clean_family "$ipt"
    if [ "$cmd" = install ]; then
        if [ "$ipt" = iptables ]; then
            install_family "$ipt" 127.0.0.1/32
        else
            install_family "$ipt" ::1/128
        fi
    fi
done

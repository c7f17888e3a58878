# NAT for tailnet tests (sourced after tailnet.sh, once tailnet_net_up
# ran): routers on the test's "internet" (the hub bridge, 10.NET.0.0/24)
# with a private LAN behind each, made with nftables in the router's own
# namespace. Every address is the test's own.
#
#   nat_router_add NAME IDX KIND  router namespace NAME: WAN 10.NET.0.(10+IDX)
#                                 on the hub, LAN 192.168.IDX.1/24 behind it.
#                                 KIND:
#                                   easy      masquerade keeping the source
#                                             port: one mapping per inside
#                                             address and port, whatever the
#                                             destination (endpoint-independent)
#                                   hard      masquerade fully-random: a new
#                                             port for every destination
#                                             (endpoint-dependent, "symmetric")
#                                   noudp     easy, and no UDP leaves the LAN
#                                             (TCP only)
#                                 Filtering is conntrack's: only replies to
#                                 what went out come in (address- and
#                                 port-dependent), so a hole is punched by
#                                 both sides sending. Unsolicited UDP is
#                                 dropped before conntrack keeps an entry
#                                 for it (as home routers do), so it cannot
#                                 take the port a later mapping keeps.
#   nat_host_add NAME ROUTER N    namespace NAME at 192.168.IDX.N behind ROUTER,
#                                 default route through it
#   nat_flush ROUTER              forgets every mapping (conntrack -F)
#   nat_mapped_ports ROUTER       the translated source ports of ROUTER's UDP
#                                 flows, one per line (to see a mapping)
#
# tailnet_knitd_start and tailnet_knit work on hosts made here as on any.

nat_router_add() {
	local name=$1 idx=$2 kind=$3 ns flags=
	ns=$(ns_name "$name")
	case $kind in
	easy | noudp) flags= ;;
	hard) flags=fully-random ;;
	*) e2e_die "nat_router_add: unknown kind $kind" ;;
	esac
	tailnet_host_add "$name" "$idx"
	ip -n "$ns" link add lan type bridge || e2e_die "bridge in $name"
	ip -n "$ns" addr add "192.168.$idx.1/24" dev lan
	ip -n "$ns" link set lan up
	ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
	eval "NAT_IDX_${name//-/_}=$idx NAT_HOSTS_${name//-/_}=0"
	ip netns exec "$ns" nft -f - <<EOF || e2e_die "nftables in $name"
table ip knitnat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" ip saddr 192.168.$idx.0/24 masquerade $flags
	}
	chain input {
		# Unsolicited UDP to the router itself is dropped before its
		# conntrack entry is confirmed: a stale entry would hold the
		# tuple a later outbound flow needs, and masquerade would move
		# that flow to another port (an easy NAT would turn hard).
		type filter hook input priority filter; policy accept;
		iifname "eth0" ct state new meta l4proto udp drop
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan" oifname "eth0" $([ "$kind" = noudp ] && echo "meta l4proto udp drop")
		iifname "lan" oifname "eth0" accept
	}
}
EOF
}

nat_host_add() {
	local name=$1 router=$2 n=$3 ns rns idx
	ns=$(ns_name "$name")
	rns=$(ns_name "$router")
	eval "idx=\$NAT_IDX_${router//-/_}"
	[ -n "$idx" ] || e2e_die "nat_host_add: no router $router"
	ip netns add "$ns" || e2e_die "cannot create namespace $ns"
	e2e_defer "ip netns del $ns"
	ip -n "$ns" link set lo up
	ip link add "n$E2E_TAG$idx$n" netns "$ns" type veth peer name "h$n" netns "$rns" || e2e_die "veth for $name"
	ip -n "$ns" link set "n$E2E_TAG$idx$n" name eth0
	ip -n "$rns" link set "h$n" master lan up
	ip -n "$ns" addr add "192.168.$idx.$n/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via "192.168.$idx.1"
}

nat_flush() {
	ip netns exec "$(ns_name "$1")" conntrack -F >/dev/null 2>&1 || true
}

nat_mapped_ports() {
	local out
	out=$(ip netns exec "$(ns_name "$1")" conntrack -L -p udp 2>/dev/null) || true
	# The reply direction's dport is the port the router mapped to.
	printf '%s\n' "$out" | awk '{n=0; for (i=1;i<=NF;i++) if ($i ~ /^dport=/) { n++; if (n==2) { sub("dport=","",$i); print $i } } }'
}

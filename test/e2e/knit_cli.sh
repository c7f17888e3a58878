#!/usr/bin/env bash
# The knit CLI's argument handling: every flag form, --help, usage errors
# (exit 2 with a message naming the flag), the version from CMake, and the
# auth key read from a file or standard input (never from argv) reaching a
# real knitd. Needs no API server: knitd runs logged out in a namespace.
source "$(dirname "$0")/lib/common.sh"

KNITD=$KNIT_BUILD_DIR/agent/knitd
KNIT=$KNIT_BUILD_DIR/agent/cli/knit

e2e_begin knit_cli
e2e_need_bin "$KNITD" "$KNIT"
NOSOCK=$E2E_DIR/missing.sock

# expect DESC STATUS PATTERN CMD...: CMD exits STATUS and prints (stdout
# and stderr together) a line matching the extended regex PATTERN.
expect() {
	local desc=$1 want=$2 pattern=$3 out rc
	shift 3
	out=$("$@" 2>&1 </dev/null)
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		e2e_fail "$desc: exit $rc, want $want; output: $(head -3 <<<"$out")"
	elif ! grep -Eq -- "$pattern" <<<"$out"; then
		e2e_fail "$desc: no line matching /$pattern/ in: $(head -3 <<<"$out")"
	else
		e2e_pass "$desc"
	fi
}

version=$(sed -nE 's/^project\(knit VERSION ([0-9.]+).*/\1/p' "$KNIT_SOURCE_DIR/CMakeLists.txt")
[ -n "$version" ] || e2e_die "no project(knit VERSION ...) in CMakeLists.txt"
expect "knit --version prints CMake's project version" 0 "^knit $version\$" "$KNIT" --version
expect "knit version prints it too, and that knitd is down" 0 "^knitd: not running\$" \
	"$KNIT" --socket "$NOSOCK" version
expect "knitd --version prints the same" 0 "^knitd $version\$" "$KNITD" --version

unreachable="knitd is not running \(no socket at $NOSOCK\)"
expect "--socket PATH" 1 "$unreachable" "$KNIT" --socket "$NOSOCK" status
expect "--socket=PATH" 1 "$unreachable" "$KNIT" --socket="$NOSOCK" status
expect "flags after the command's own" 1 "$unreachable" "$KNIT" --socket "$NOSOCK" ip node1 -4
expect "-- ends the flags" 1 "$unreachable" "$KNIT" --socket "$NOSOCK" ping -c 1 -- node1
expect "--json=true" 1 "$unreachable" "$KNIT" --socket "$NOSOCK" status --json=true
expect "ping -c3 (attached value)" 1 "$unreachable" "$KNIT" --socket "$NOSOCK" ping -c3 node1

expect "knit --help" 0 "^Usage: knit \[--socket PATH\] COMMAND" "$KNIT" --help
expect "knit -h" 0 "^Usage: knit \[--socket PATH\] COMMAND" "$KNIT" -h
expect "knit help" 0 "^Usage: knit \[--socket PATH\] COMMAND" "$KNIT" help
for cmd in up down status ping ip whois logout version netcheck; do
	expect "knit $cmd --help" 0 "^Usage: knit $cmd" "$KNIT" --socket "$NOSOCK" "$cmd" --help
	expect "knit $cmd -h" 0 "^Usage: knit $cmd" "$KNIT" --socket "$NOSOCK" "$cmd" -h
done

expect "no command" 2 "^knit: which command\?" "$KNIT"
expect "unknown command" 2 '^knit: unknown command "frob"' "$KNIT" frob
expect "unknown global flag" 2 '^knit: unknown or ambiguous flag "--frob"' "$KNIT" --frob status
expect "--socket without a value" 2 "^knit: --socket needs a value" "$KNIT" --socket
expect "--socket=''" 2 "^knit: --socket needs a path" "$KNIT" --socket= status
expect "unknown flag of a command" 2 '^knit status: unknown or ambiguous flag "--frob"' "$KNIT" status --frob
expect "unknown short flag" 2 '^knit ip: unknown flag "-x"' "$KNIT" ip -x
expect "a value for a flag that takes none" 2 "^knit down: --help=yes takes no value" "$KNIT" down --help=yes
expect "a missing value" 2 "^knit up: --timeout needs a value" "$KNIT" up --timeout
expect "a missing short value" 2 "^knit ping: -c needs a value" "$KNIT" ping node1 -c
expect "a bad number" 2 '^knit up: --timeout wants a number of seconds, not "soon"' "$KNIT" up --timeout=soon
expect "a zero count" 2 '^knit ping: -c wants a positive count, not "0"' "$KNIT" ping -c 0 node1
expect "--json=maybe" 2 "^knit status: --json=maybe: want true or false" "$KNIT" status --json=maybe
expect "a stray argument" 2 '^knit up: unexpected argument "now"' "$KNIT" up now
expect "two peers" 2 "^knit ping: one PEER only" "$KNIT" ping a b
expect "no peer" 2 "^knit ping: which peer\?" "$KNIT" ping
expect "-4 and -6" 2 "^knit ip: -4 or -6, not both" "$KNIT" ip -4 -6
expect "whois wants an IP" 2 '^knit whois: "node1" is not an IP address' "$KNIT" whois node1
expect "the key twice" 2 "^knit up: give the auth key once" "$KNIT" up --authkey k --authkey-file /dev/null
expect "a missing key file" 1 "^knit: cannot read the auth key from $E2E_DIR/nokey: No such file" \
	"$KNIT" --socket "$NOSOCK" up --authkey-file "$E2E_DIR/nokey"
expect "an empty key file" 1 "^knit: no auth key in /dev/null" "$KNIT" --socket "$NOSOCK" up --authkey-file /dev/null
printf 'tskey-one\ntskey-two\n' >"$E2E_DIR/twokeys"
expect "a file of two keys" 1 "holds more than one word" "$KNIT" --socket "$NOSOCK" up --authkey-file "$E2E_DIR/twokeys"
printf 'tskey-one\0two' >"$E2E_DIR/nulkey"
expect "a key file with a NUL byte" 1 "is not text" "$KNIT" --socket "$NOSOCK" up --authkey-file "$E2E_DIR/nulkey"
expect "empty standard input" 1 "^knit: no auth key in standard input" "$KNIT" --socket "$NOSOCK" up --authkey -

# A real knitd, logged out: without a key "up" is refused with NeedsLogin;
# with one (from a file or from stdin) knitd goes on to the login server,
# which is not there. So the second answer proves the key arrived.
NS=knitcli-$$
ip netns add "$NS" || e2e_die "ip netns add $NS"
e2e_defer "ip netns del $NS"
ip -n "$NS" link set lo up
SOCK=$E2E_DIR/knitd.sock
e2e_bg knitd ip netns exec "$NS" "$KNITD" run --state-dir "$E2E_DIR/state" --socket "$SOCK" --tun knit0 --port 0
e2e_wait_for 20 test -S "$SOCK" || e2e_die "knitd did not start: $(tail -5 "$E2E_DIR/knitd.log")"
knit_ns() { ip netns exec "$NS" "$KNIT" --socket "$SOCK" "$@"; }
LOGIN=http://127.0.0.1:9
printf '  tskey-from-a-file\n' >"$E2E_DIR/key"
expect "knitd runs and answers knit version" 0 "^knitd $version\$" knit_ns version
expect "up without a key: NeedsLogin" 1 "not logged in" knit_ns up --login-server "$LOGIN"
expect "up --authkey-file: the key reaches knitd" 1 "cannot talk to the coordination server" \
	knit_ns up --authkey-file "$E2E_DIR/key" --login-server "$LOGIN"
keyed_stdin() { printf 'tskey-from-stdin\n' | knit_ns up --authkey - --login-server "$LOGIN"; }
expect "up --authkey -: the key from stdin reaches knitd" 1 "cannot talk to the coordination server" keyed_stdin
keyed_stdin_file() { knit_ns up --authkey-file - --login-server "$LOGIN" <"$E2E_DIR/key"; }
expect "up --authkey-file -: the same" 1 "cannot talk to the coordination server" keyed_stdin_file

# knit policy check: offline, for CI pipelines gating policy changes.
cat >"$E2E_DIR/good.hujson" <<'POL'
{
  // comments and trailing commas, as in the Tailscale policy file
  "groups": {"group:dev": ["alice@example.com"]},
  "tagOwners": {"tag:db": ["group:dev"]},
  "acls": [{"action": "accept", "src": ["group:dev"], "dst": ["tag:db:5432"]},],
  "tests": [{"src": "alice@example.com", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]}],
}
POL
sed 's/"deny": \["tag:db:22"\]/"deny": ["tag:db:5432"]/' "$E2E_DIR/good.hujson" >"$E2E_DIR/failing.hujson"
sed 's/"group:dev": \["alice@example.com"\]/"group:dev": ["alice@example.com"],,/' "$E2E_DIR/good.hujson" >"$E2E_DIR/broken.hujson"
expect "policy check: a valid policy whose tests hold" 0 "valid" "$KNIT" policy check "$E2E_DIR/good.hujson"
expect "policy check: a failing test is named" 1 "5432" "$KNIT" policy check "$E2E_DIR/failing.hujson"
expect "policy check: a syntax error has its line:column" 1 "broken.hujson:3:[0-9]+" "$KNIT" policy check "$E2E_DIR/broken.hujson"
expect "policy check without a file is a usage error" 2 "usage: knit policy check" "$KNIT" policy check
expect "knit policy alone asks which subcommand" 2 "which subcommand" "$KNIT" policy

e2e_end

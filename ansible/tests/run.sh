#!/usr/bin/env bash
# The Ansible role against localhost with a real program running (issue 10
# item 3): the playbook patches the running program (its output changes, its
# tick count carries on), a second run changes nothing, and a restarted
# program applies the persisted patch before its first line.
#
#   ansible/tests/run.sh [BIN_DIR]   (BIN_DIR holds hpbuild and hpctl;
#                                     default target/release)
# ansible-playbook comes from $ANSIBLE_VENV (default target/ansible-venv),
# made with pip on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=$(cd "${1:-$repo/target/release}" && pwd)
venv=${ANSIBLE_VENV:-$repo/target/ansible-venv}

if [ ! -x "$venv/bin/ansible-playbook" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install --quiet ansible-core
fi

work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "ansible test: $*" >&2; exit 1; }

# The program, built the way a user builds: loader linked whole.
mkdir -p "$work/src"
cp "$here/app.c" "$work/src/"
cat >"$work/src/compile_commands.json" <<JSON
[{"directory": "$work/src", "file": "app.c", "arguments": ["cc", "-O2", "-g", "-c", "app.c", "-o", "app.o"]}]
JSON
"$bin/hpbuild" loader --out "$work/loader" >/dev/null
(cd "$work/src" && cc -O2 -g -c app.c -o app.o &&
  cc app.o -o app -Wl,--whole-archive "$work/loader/libhotpatch.a" -Wl,--no-whole-archive -lpthread)
"$bin/hpbuild" --base "$work/src" --diff "$here/fix.patch" -o "$work/fix.hpo" >/dev/null

export HOTPATCH_DIR=$work/state HOTPATCH_LOG=$work/app.log
start() {
  "$work/src/app" >"$work/out.$1" &
  pid=$!
  for _ in $(seq 100); do grep -q "@hotpatch.$pid\$" /proc/net/unix && return; sleep 0.05; done
  fail "the program never listened"
}
last() { tail -n 1 "$work/out.$1"; }
start 1
sleep 0.3
case "$(last 1)" in *"answer 1") ;; *) fail "before the patch: $(last 1)" ;; esac
before=$(last 1 | cut -d' ' -f2)

playbook() {
  PATH="$bin:$PATH" ANSIBLE_ROLES_PATH="$repo/ansible/roles" ANSIBLE_NOCOLOR=1 \
    "$venv/bin/ansible-playbook" -i localhost, -c local "$here/localhost.yml" \
    -e "ansible_python_interpreter=$venv/bin/python" \
    -e "hotpatch_exe=$work/src/app hotpatch_src=$work/fix.hpo hotpatch_incoming=$work/incoming" \
    >"$work/play.$1" 2>&1 || { cat "$work/play.$1" >&2; fail "playbook run $1 failed"; }
  grep -E '^localhost +:' "$work/play.$1"
}

recap=$(playbook 1)
echo "first run:  $recap"
[[ $recap == *"failed=0"* && $recap != *"changed=0"* ]] || fail "first run should change"
grep -q "\"$pid ok applied fix" "$work/play.1" || { cat "$work/play.1"; fail "no per-process line"; }
sleep 0.3
case "$(last 1)" in *"answer 42") ;; *) fail "after the patch: $(last 1)" ;; esac
after=$(last 1 | cut -d' ' -f2)
[ "$after" -gt "$before" ] || fail "the tick count restarted ($before then $after)"

recap=$(playbook 2)
echo "second run: $recap"
[[ $recap == *"changed=0"* && $recap == *"failed=0"* ]] || fail "second run should change nothing"
grep -Eq "\"$pid ok fix-[0-9a-f]+ is applied already\"" "$work/play.2" || { cat "$work/play.2"; fail "second run's line"; }

kill "$pid"
wait "$pid" 2>/dev/null || true
start 2
sleep 0.2
case "$(head -n 1 "$work/out.2")" in "tick 1 answer 42") ;; *) fail "restarted: $(head -n 1 "$work/out.2")" ;; esac
echo "ansible test: patched live (ticks $before -> $after), idempotent, re-applied at start-up"

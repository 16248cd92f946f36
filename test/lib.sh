# lib.sh: tiny test helpers for the suite (sourced by run_tests.sh).
#   check NAME CMD...                       passes if CMD exits 0
#   skip NAME REASON                         counts a test that cannot run here (no GPU, no tokenizer);
#                                           finish lists every skip with its reason above the closing line
#   check_fail NAME STATUS PATTERN CMD...   passes if CMD exits with STATUS and its stderr+stdout
#                                           contains PATTERN (a grep -E regex)
#   same_out CMD_A CMD_B                    (a command for check) passes if both bash command lines
#                                           succeed (pipefail), print something, and print the same
# Output of a failing command is shown (last 20 lines). Every test runs in its own scratch dir
# under $TEST_TMP (removed at the end unless KEEP_TMP=1).
PASS=0; FAIL=0; SKIP=0; FAILED_NAMES=(); SKIPPED=()
PYTHON=${PYTHON:-/usr/bin/python3}
ROOT=$(pwd)
TEST_TMP=$(mktemp -d /tmp/pgtest.XXXXXX)
export PYTHON ROOT TEST_TMP

_report() { # name ok output
    if [ "$2" = 1 ]; then PASS=$((PASS + 1)); echo "  ok    $1"
    else FAIL=$((FAIL + 1)); FAILED_NAMES+=("$1"); echo "  FAIL  $1"; echo "$3" | tail -n 20 | sed 's/^/        | /'; fi
}
check() {
    local name=$1; shift
    local out; out=$("$@" 2>&1); local rc=$?
    if [ $rc -eq 0 ]; then _report "$name" 1 ""; else _report "$name" 0 "$out
(exit status $rc)"; fi
}
check_fail() {
    local name=$1 want=$2 pat=$3; shift 3
    local out; out=$("$@" 2>&1); local rc=$?
    if [ $rc -eq "$want" ] && grep -qE -- "$pat" <<<"$out"; then _report "$name" 1 ""
    else _report "$name" 0 "$out
(exit status $rc, wanted $want and /$pat/)"; fi
}
same_out() {
    local a b; a=$(mktemp "$TEST_TMP/same.XXXXXX"); b=$(mktemp "$TEST_TMP/same.XXXXXX")
    bash -o pipefail -c "$1" > "$a" || { echo "failed: $1"; return 1; }
    bash -o pipefail -c "$2" > "$b" || { echo "failed: $2"; return 1; }
    [ -s "$a" ] || { echo "no output: $1"; return 1; }
    diff "$a" "$b"
}
skip() { # name reason
    SKIP=$((SKIP + 1)); SKIPPED+=("$1 ($2)"); echo "  skip  $1 ($2)"
}
finish() {
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TEST_TMP"
    if [ $FAIL -gt 0 ]; then echo "failed:"; printf '  %s\n' "${FAILED_NAMES[@]}"; fi
    if [ $SKIP -gt 0 ]; then
        echo "skipped:"; printf '  %s\n' "${SKIPPED[@]}"
        echo "$PASS passed, $FAIL failed, $SKIP skipped"
    else echo "$PASS passed, $FAIL failed"; fi
    [ $FAIL -eq 0 ]
}

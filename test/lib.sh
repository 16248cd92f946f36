# lib.sh: tiny test helpers for the suite (sourced by run_tests.sh).
#   check NAME CMD...                       passes if CMD exits 0
#   skip NAME REASON                         counts a test that cannot run here (no GPU)
#   check_fail NAME STATUS PATTERN CMD...   passes if CMD exits with STATUS and its stderr+stdout
#                                           contains PATTERN (a grep -E regex)
# Output of a failing command is shown (last 20 lines). Every test runs in its own scratch dir
# under $TEST_TMP (removed at the end unless KEEP_TMP=1).
PASS=0; FAIL=0; SKIP=0; FAILED_NAMES=()
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
skip() { # name reason
    SKIP=$((SKIP + 1)); echo "  skip  $1 ($2)"
}
finish() {
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$TEST_TMP"
    if [ $FAIL -gt 0 ]; then echo "failed:"; printf '  %s\n' "${FAILED_NAMES[@]}"; fi
    if [ $SKIP -gt 0 ]; then echo "$PASS passed, $FAIL failed, $SKIP skipped"; else echo "$PASS passed, $FAIL failed"; fi
    [ $FAIL -eq 0 ]
}

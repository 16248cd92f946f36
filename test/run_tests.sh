#!/usr/bin/env bash
# run_tests.sh: the CPU test suite. Sources every test/test_*.sh (each a list of `check` calls,
# see lib.sh), then prints the closing line "N passed, M failed". Exit status is non-zero if
# anything failed. Run it from the repository root (make test does).
#   bash test/run_tests.sh            all groups
#   bash test/run_tests.sh tokenizer  only test/test_tokenizer.sh
set -u
cd "$(dirname "$0")/.."
source test/lib.sh
groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then
    for f in test/test_*.sh; do g=${f#test/test_}; groups+=("${g%.sh}"); done
fi
for g in "${groups[@]}"; do
    echo "== $g"
    source "test/test_$g.sh"
done
finish

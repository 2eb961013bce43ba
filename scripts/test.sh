#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what is missing, then `cargo test --workspace`.
# Tests that need the real volumes of ../shared/data run too when LOGONET_DATA points at them
# (.ci/run sets it when ../shared/data exists); without it they print a skip note and pass.
# Ends with one summary line: "summary: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-system.sh || exit 1

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export RUST_BACKTRACE=1
log=$(mktemp)
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

passed=0; failed=0; ignored=0
while read -r p f i; do
  passed=$((passed + p)); failed=$((failed + f)); ignored=$((ignored + i))
done < <(sed -nE 's/^test result: [a-zA-Z]+\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/p' "$log")
rm -f "$log"
echo "summary: $passed passed, $failed failed, $ignored skipped"
exit "$status"

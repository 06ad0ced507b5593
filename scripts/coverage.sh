#!/usr/bin/env bash
# Line coverage of the engine (remediator/src/engine/, test code left out) and the plan
# (remediator/src/plan/) by the remediator's unit and scenario tests, measured with
# cargo-llvm-cov on this machine's toolchain; writes docs/coverage.md. Installs llvm-tools and
# cargo-llvm-cov when missing. No etcd is started: this is what the scenario tests prove.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'coverage: %s\n' "$*" >&2; }

if ! rustup component list --installed 2>/dev/null | grep '^llvm-tools' >/dev/null; then
  log "installing the llvm-tools component"
  rustup component add llvm-tools-preview
fi
if ! command -v cargo-llvm-cov >/dev/null 2>&1; then
  log "installing cargo-llvm-cov"
  cargo install --locked cargo-llvm-cov --version 0.9.1
fi

json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo llvm-cov --locked -p etcdmedic-remediator --lib --json --output-path "$json" >&2

python3 - "$json" <<'EOF' >docs/coverage.md
import datetime, json, os, platform, re, subprocess, sys

report = json.load(open(sys.argv[1]))
root = os.getcwd() + "/"
# The backup procedures a run and the engine's scenario tests drive moved to backup/ from the
# engine: still measured with it.
procedures = ["remediator/src/backup/take.rs", "remediator/src/backup/land.rs",
              "remediator/src/backup/drill_taken.rs", "remediator/src/backup/cluster.rs"]
wanted = re.compile(r"^remediator/src/(engine|plan)/|^(" + "|".join(map(re.escape, procedures)) + ")$")
test_code = re.compile(r"^remediator/src/engine/tests/")
rows = []
for entry in report["data"][0]["files"]:
    path = entry["filename"].removeprefix(root)
    if not wanted.match(path) or test_code.match(path):
        continue
    lines = entry["summary"]["lines"]
    rows.append((path, lines["covered"], lines["count"]))
# A file with nothing to run (declarations only) is not in the report: listed all the same.
measured = {r[0] for r in rows}
for top in ("remediator/src/engine", "remediator/src/plan"):
    for dirpath, _, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            if name.endswith(".rs") and name != "tests.rs" and not test_code.match(path) and path not in measured:
                rows.append((path, 0, 0))
rows.extend((path, 0, 0) for path in procedures if path not in measured)
rows.sort()
covered = sum(r[1] for r in rows)
count = sum(r[2] for r in rows)
total = 100.0 * covered / count if count else 0.0

def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
llvm_cov = subprocess.run(["cargo", "llvm-cov", "--version"], capture_output=True, text=True).stdout.strip()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print("# Test coverage of the engine\n")
print("Written by `make coverage` (scripts/coverage.sh); do not edit by hand.\n")
print(f"Measured {now} with {llvm_cov} on {rustc}, {os.cpu_count()} x {cpu()}:")
print("line coverage of `remediator/src/engine/` (its `tests/` left out), `remediator/src/plan/`")
print("and the backup procedures the engine drives (`backup/take.rs`, `land.rs`, `drill_taken.rs`,")
print("`cluster.rs`) by `cargo test -p etcdmedic-remediator --lib`: the unit tests and")
print("the scenario tests against the scripted cluster. The end-to-end tests against real etcd")
print("run the same code again and are not counted here; `engine/live.rs`, the etcd-client")
print("side of the seam the scenario tests replace, is reached only by them.\n")
print(f"**{total:.1f}% of {count} lines** (target: 90%).\n")
print("| file | lines | covered |")
print("|---|---:|---:|")
for path, c, n in rows:
    print(f"| `{path}` | {n} | {100.0 * c / n:.1f}% |" if n else f"| `{path}` | 0 | nothing to run |")
EOF
log "$(grep -m1 '^\*\*' docs/coverage.md)"

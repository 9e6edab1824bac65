#!/usr/bin/env bash
# Installs what is missing, builds shoal twice (release with warnings as
# errors, and with AddressSanitizer + UndefinedBehaviorSanitizer), runs the
# whole test suite in both, and ends with one line: "N passed, N failed".
#
#   deploy/test.sh              # everything
#   deploy/test.sh --no-asan    # release build only (faster)
#   SHOAL_BUILD_DIR=... picks where the builds go (default: build, build-asan)
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

asan=1
for a in "$@"; do
  case $a in
    --no-asan) asan=0 ;;
    *) echo "usage: $0 [--no-asan]" >&2; exit 2 ;;
  esac
done

deploy/install-deps.sh --quiet || { echo "test: installing dependencies failed" >&2; exit 1; }

base=${SHOAL_BUILD_DIR:-build}
builds=("$base:-Dwerror=true")
((asan)) && builds+=("$base-asan:-Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dpeers=disabled")
# ThreadSanitizer on the concurrency test only (the index annotates its RCU
# grace periods for TSan; see common/index/hnsw_impl.h).
((asan)) && builds+=("$base-tsan:-Db_sanitize=thread -Db_lundef=false -Dpeers=disabled:hnsw_stress")

status=0
for b in "${builds[@]}"; do
  IFS=: read -r dir opts only <<<"$b"
  echo "== $dir ($opts)" >&2
  if [[ -d $dir/meson-private ]]; then
    # shellcheck disable=SC2086
    meson configure "$dir" $opts >/dev/null || status=1
  else
    # shellcheck disable=SC2086
    if ! meson setup "$dir" $opts >"$dir.setup.log" 2>&1; then
      # say why: meson's own message and the end of its log
      echo "test: meson setup $dir failed:" >&2
      tail -n 25 "$dir.setup.log" >&2
      [[ -f $dir/meson-logs/meson-log.txt ]] && tail -n 25 "$dir/meson-logs/meson-log.txt" >&2
      status=1
      continue
    fi
  fi
  rm -f "$dir/meson-logs/testlog.json"
  if [[ -n $only ]]; then
    # one unit test: its program is tests/test_<name>
    ninja -C "$dir" "tests/test_$only" >&2 ||
      { echo "test: build in $dir failed" >&2; status=1; continue; }
    meson test -C "$dir" --no-rebuild --print-errorlogs "$only" >&2 || status=1
  else
    ninja -C "$dir" >&2 || { echo "test: build in $dir failed" >&2; status=1; continue; }
    meson test -C "$dir" --no-rebuild --print-errorlogs >&2 || status=1
  fi
done

# Count every test result of every build from meson's JSON logs.
/usr/bin/env python3 - "${builds[@]}" <<'PY'
import json, sys, os
passed = failed = skipped = 0
for b in sys.argv[1:]:
    d = b.split(':', 1)[0]
    log = os.path.join(d, 'meson-logs', 'testlog.json')
    if not os.path.exists(log):
        failed += 1  # a build that never got to its tests counts as a failure
        continue
    for line in open(log):
        r = json.loads(line).get('result')
        if r in ('OK', 'EXPECTEDFAIL'):
            passed += 1
        elif r == 'SKIP':
            skipped += 1
        else:
            failed += 1
tail = f", {skipped} skipped" if skipped else ""
print(f"{passed} passed, {failed} failed{tail}")
sys.exit(1 if failed else 0)
PY
rc=$?
((status)) && rc=1
exit $rc

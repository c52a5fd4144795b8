#!/usr/bin/env bash
# efsign-report checks every field it prints: a summary with a wrong type, a value out of
# range, a missing field, a line that is not a JSON object, or a file it cannot read is
# one line naming the file, the line and the field, exit code 2, and no table.
#   cli_report.sh EFSIGN_REPORT
set -u
report=$1
work=$(mktemp -d /tmp/efsign-report-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

epoch='{"event":"epoch","epoch":1,"lr":0.3,"train_loss":0.61,"test_acc":0.85,"steps":468}'
summary='{"event":"summary","world_size":2,"backend":"mpi","optimizer":"ef-signsgd","exchange":"allgather","overlap":false,"model":"convnet","dataset":"fashion-mnist","epochs":1,"batch_size":64,"lr":0.3,"num_params":215146,"num_layers":8,"test_acc":0.8676,"test_loss":0.37,"bytes_sent_per_step":26960,"fp32_bytes_per_step":861480,"compression_ratio":32.0,"step_time_ms":24.85,"images_per_sec":5147,"train_time_s":11.6,"param_checksum":"494b0d180825651c","global_steps":468,"stopped_early":false}'

# write NAME SED: a file of an epoch record and the summary edited by SED (line 2).
write() { printf '%s\n%s\n' "$epoch" "$(sed "$2" <<<"$summary")" >"$work/$1.jsonl"; }

rc=0
write good 's/x/x/'
"$report" "$work/good.jsonl" >"$work/good.out" 2>&1 || rc=$?
cat "$work/good.out"
if [ "$rc" -eq 0 ]; then ok "a valid summary: exit 0"; else fail "a valid summary: exit $rc"; fi
if grep -Eq '^\| ef-signsgd +\| +2 \| +86\.76% \| +26960 \| +32\.0x \| +24\.85 ms \| +5147 \| 494b0d180825651c \|$' \
  "$work/good.out"; then ok "a valid summary: the row"; else fail "a valid summary: the row"; fi

# expect_error NAME FILE... -- PATTERN...: exit 2, nothing on stdout, one line on stderr
# matching every extended regex PATTERN.
expect_error() {
  local name=$1 files=() rc=0
  shift
  while [ "$1" != "--" ]; do files+=("$1"); shift; done
  shift
  "$report" "${files[@]}" >"$work/out" 2>"$work/err" || rc=$?
  local why=""
  [ "$rc" -eq 2 ] || why="exit $rc, want 2"
  [ -s "$work/out" ] && why="$why; a table was printed"
  [ "$(wc -l <"$work/err")" -eq 1 ] || why="$why; $(wc -l <"$work/err") lines on stderr"
  for p in "$@"; do grep -Eq -- "$p" "$work/err" || why="$why; no '$p'"; done
  if [ -z "$why" ]; then ok "$name: $(cat "$work/err")"; else fail "$name: $why"; cat "$work/out" "$work/err"; fi
}

write str 's/"test_acc":0.8676/"test_acc":"two"/'
expect_error "a string for a number" "$work/str.jsonl" -- "str\.jsonl:2: " '"test_acc"' '"two"'
write range 's/"test_acc":0.8676/"test_acc":1.5/'
expect_error "accuracy above 1" "$work/range.jsonl" -- "range\.jsonl:2: " '"test_acc"' '1\.5'
write null 's/"step_time_ms":24.85/"step_time_ms":null/'
expect_error "null (a NaN written by the trainer)" "$work/null.jsonl" -- "null\.jsonl:2: " '"step_time_ms"' null
write negative 's/"bytes_sent_per_step":26960/"bytes_sent_per_step":-1/'
expect_error "negative bytes" "$work/negative.jsonl" -- "negative\.jsonl:2: " '"bytes_sent_per_step"'
write ranks 's/"world_size":2/"world_size":2.5/'
expect_error "fractional ranks" "$work/ranks.jsonl" -- "ranks\.jsonl:2: " '"world_size"'
write boolean 's/"images_per_sec":5147/"images_per_sec":true/'
expect_error "a boolean for a number" "$work/boolean.jsonl" -- "boolean\.jsonl:2: " '"images_per_sec"'
write checksum 's/"param_checksum":"494b0d180825651c"/"param_checksum":42/'
expect_error "a number for the checksum" "$work/checksum.jsonl" -- "checksum\.jsonl:2: " '"param_checksum"'
write optimizer 's/"optimizer":"ef-signsgd",//'
expect_error "a missing field" "$work/optimizer.jsonl" -- "optimizer\.jsonl:2: " '"optimizer"' missing
write missing 's/"fp32_bytes_per_step":861480,//'
expect_error "another missing field" "$work/missing.jsonl" -- "missing\.jsonl:2: " '"fp32_bytes_per_step"' missing
printf '%s\n[1,2]\n%s\n' "$epoch" "$summary" >"$work/array.jsonl"
expect_error "a line that is not an object" "$work/array.jsonl" -- "array\.jsonl:2: " "not a flat JSON object"
printf '%s\n%s\n%s\n' "$epoch" "$summary" '{"event":"summ' >"$work/cut.jsonl"
expect_error "a line cut short (a crash while writing)" "$work/cut.jsonl" -- "cut\.jsonl:3: "
printf '%s\n%s\n' "$epoch" "${summary%\}},\"x\":{\"y\":1}}" >"$work/nested.jsonl"
expect_error "a nested object" "$work/nested.jsonl" -- "nested\.jsonl:2: " '"x"'
printf '%s\n' "$epoch" >"$work/nosummary.jsonl"
expect_error "no summary record" "$work/nosummary.jsonl" -- "nosummary\.jsonl: no summary record"
expect_error "a directory" "$work" -- "$work: .*Is a directory"
expect_error "a missing file" "$work/absent.jsonl" -- "absent\.jsonl: .*No such file or directory"
expect_error "a bad file after a good one: no table" "$work/good.jsonl" "$work/str.jsonl" -- "str\.jsonl:2: "
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]

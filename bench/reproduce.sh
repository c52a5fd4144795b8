#!/usr/bin/env bash
# Paper-reproduction harness for efsign (EF-SignSGD, Table 1 form).
#
#   bench/reproduce.sh --quick                       # Fashion-MNIST convnet, W=2, 3 epochs
#   bench/reproduce.sh --full --data-dir DIR [--ranks W] [--dataset cifar100|cifar10]
#
# Options:
#   --ranks W            MPI ranks (default 2)
#   --batches "128 32"   GLOBAL batch sizes (per-rank = global / W)
#   --seeds "1 2"        seeds (default "1")
#   --epochs N           epochs per run (quick 3, full 200)
#   --optimizers "..."   default "sgdm signsgd signum ef-signsgd"
#   --dataset D          full mode: cifar100 (resnet18, default) | cifar10 (vgg19)
#   --data-dir DIR       data directory (required for --full)
#   --out DIR            default runs/reproduce-quick | runs/reproduce-full
#   --dry-run            print the commands and the time estimate, run nothing
#   --mpirun "CMD"       launcher (default: mpirun [--allow-run-as-root] --oversubscribe)
#   --no-reset           do not pass --reset-state-at-milestones
#   --trainer PATH       default build/efsign-train
#   -- EXTRA...          passed verbatim to every efsign-train call
#
# Output: OUT/{opt}_b{global}_s{seed}.jsonl (+ .log), OUT/table.md, OUT/*.png.
# Resumable: a run whose .jsonl already holds a summary record is skipped.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=""
RANKS=2
BATCHES=""
SEEDS="1"
EPOCHS=""
OPTIMIZERS="sgdm signsgd signum ef-signsgd"
DATASET="cifar100"
DATA_DIR=""
OUT=""
DRY=0
MPIRUN=""
RESET=1
TRAINER="$ROOT/build/efsign-train"
EXTRA=()

die() { echo "reproduce.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick ;;
    --full) MODE=full ;;
    --ranks) RANKS="$2"; shift ;;
    --batches) BATCHES="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --epochs) EPOCHS="$2"; shift ;;
    --optimizers) OPTIMIZERS="$2"; shift ;;
    --dataset) DATASET="$2"; shift ;;
    --data-dir) DATA_DIR="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --dry-run) DRY=1 ;;
    --mpirun) MPIRUN="$2"; shift ;;
    --no-reset) RESET=0 ;;
    --trainer) TRAINER="$2"; shift ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ -n "$MODE" ] || die "give --quick or --full (see --help)"
case "$RANKS" in ''|*[!0-9]*|0) die "--ranks must be a positive integer" ;; esac

if [ "$MODE" = quick ]; then
  PRESET=convnet-fashion-mnist
  DSNAME=fashion-mnist; MODEL=convnet; N_TRAIN=60000
  : "${BATCHES:=128 32}"; : "${EPOCHS:=3}"; : "${OUT:=runs/reproduce-quick}"
  MILESTONE_ARGS=(--lr-milestones 2)
  [ "$EPOCHS" = 3 ] || MILESTONE_ARGS=(--lr-milestones $((EPOCHS - 1 > 0 ? EPOCHS - 1 : 1)))
else
  case "$DATASET" in
    cifar100) PRESET=resnet18-cifar100; DSNAME=CIFAR-100; MODEL=resnet18 ;;
    cifar10)  PRESET=vgg19-cifar10;     DSNAME=CIFAR-10;  MODEL=vgg19 ;;
    *) die "--dataset must be cifar100 or cifar10" ;;
  esac
  N_TRAIN=50000
  [ -n "$DATA_DIR" ] || die "--full needs --data-dir DIR (CIFAR binary files)"
  : "${BATCHES:=128 32 8}"; : "${EPOCHS:=200}"; : "${OUT:=runs/reproduce-full}"
  MILESTONE_ARGS=()   # the preset's 100,150
fi
case "$EPOCHS" in ''|*[!0-9]*|0) die "--epochs must be a positive integer" ;; esac

for o in $OPTIMIZERS; do
  case "$o" in sgdm|signsgd|signum|ef-signsgd) ;; *) die "unknown optimizer '$o' (sgdm signsgd signum ef-signsgd)" ;; esac
done
for g in $BATCHES; do
  case "$g" in ''|*[!0-9]*|0) die "batch '$g' is not a positive integer" ;; esac
  if [ $((g % RANKS)) -ne 0 ]; then
    die "global batch $g is not divisible by --ranks $RANKS (per-rank batch = global / W must be an integer); choose other --batches or --ranks"
  fi
done

if [ -z "$MPIRUN" ]; then
  MPIRUN="mpirun --oversubscribe"
  [ "$(id -u)" = 0 ] && MPIRUN="mpirun --allow-run-as-root --oversubscribe"
fi
export OMP_NUM_THREADS=1

if [ ! -x "$TRAINER" ]; then
  if [ "$DRY" = 1 ]; then echo "warning: trainer $TRAINER not found/executable (dry run continues)"
  else die "trainer $TRAINER not found; build it first (cmake --build build)"; fi
fi

COMMON=(--preset "$PRESET" --epochs "$EPOCHS" "${MILESTONE_ARGS[@]}" --progress off)
[ "$RESET" = 1 ] && COMMON+=(--reset-state-at-milestones)
[ -n "$DATA_DIR" ] && COMMON+=(--data-dir "$DATA_DIR")

n_words() { set -- $1; echo $#; }
NOPT=$(n_words "$OPTIMIZERS"); NSEED=$(n_words "$SEEDS")

# json_field FILE EVENT KEY  -> value of KEY in the last record of EVENT (no python needed)
json_field() {
  grep "\"event\":\"$2\"" "$1" 2>/dev/null | tail -n 1 |
    sed -n "s/.*\"$3\":\"\{0,1\}\([^,\"}]*\)\"\{0,1\}[,}].*/\1/p"
}
has_summary() { grep -q '"event":"summary"' "$1" 2>/dev/null; }
fmt_s() { awk -v s="$1" 'BEGIN{s=int(s+0.5); printf "%dh%02dm%02ds", s/3600, (s%3600)/60, s%60}'; }

mkdir -p "$OUT" || die "cannot create $OUT"
T0=$(date +%s)

echo "== efsign paper reproduction ($MODE): $DSNAME / $MODEL, preset $PRESET, W=$RANKS ranks"
echo "   global batches: $BATCHES | optimizers: $OPTIMIZERS | seeds: $SEEDS | epochs: $EPOCHS"
echo "   out: $OUT | launcher: $MPIRUN -np $RANKS"
echo

# ---------------------------------------------------------------- time estimate
EVAL_PCT=5
echo "== expected wall time (probe: 1 epoch x 10 steps of sgdm per batch size, the real model/data;"
echo "   all optimizers assumed to step like sgdm; on a 2-core VM the quick estimate came out ~30% low: allow ~1.5x;"
echo "   assumed +${EVAL_PCT}% for per-epoch test evaluation, start-up and metrics)"
TOTAL_EST=0; EST_OK=1
for g in $BATCHES; do
  pr=$((g / RANKS))
  pf="$OUT/probe_b${g}.jsonl"
  rm -f "$pf"
  if [ -x "$TRAINER" ] && $MPIRUN -np "$RANKS" "$TRAINER" "${COMMON[@]}" --optimizer sgdm --batch-size "$pr" \
        --seed 1 --epochs 1 --steps-per-epoch 10 --metrics-out "$pf" "${EXTRA[@]}" >"$OUT/probe_b${g}.log" 2>&1 \
     && has_summary "$pf"; then
    st=$(json_field "$pf" summary step_time_ms)
    read -r spe runs secs <<<"$(awk -v n="$N_TRAIN" -v g="$g" -v e="$EPOCHS" -v o="$NOPT" -v s="$NSEED" -v st="$st" -v p="$EVAL_PCT" \
      'BEGIN{spe=int((n+g-1)/g); r=o*s; t=spe*e*r*st/1000*(1+p/100); printf "%d %d %.0f", spe, r, t}')"
    TOTAL_EST=$((TOTAL_EST + secs))
    printf "   batch %4d (%d/rank): %.1f ms/step x %d steps/epoch x %d epochs x %d runs -> %s\n" \
      "$g" "$pr" "$st" "$spe" "$EPOCHS" "$runs" "$(fmt_s "$secs")"
  else
    EST_OK=0
    echo "   batch $g ($pr/rank): no estimate: probe failed (is --data-dir right?) -- see $OUT/probe_b${g}.log:"
    { grep -i 'error' "$OUT/probe_b${g}.log" | head -n 3 | grep . || tail -n 3 "$OUT/probe_b${g}.log"; } 2>/dev/null | sed 's/^/      | /'
  fi
done
if [ "$EST_OK" = 1 ]; then
  echo "   TOTAL expected: $(fmt_s "$TOTAL_EST") (before skipping runs that already have a summary)"
else
  echo "   TOTAL expected: incomplete (a probe failed)"
  if [ "$DRY" = 0 ]; then
    die "probe failed; fix the setup (data dir, trainer, launcher) or use --dry-run to only print the commands"
  fi
fi
echo

# ---------------------------------------------------------------- runs
echo "== runs"
FAILED=()
for g in $BATCHES; do
  pr=$((g / RANKS))
  for seed in $SEEDS; do
    for opt in $OPTIMIZERS; do
      base="$OUT/${opt}_b${g}_s${seed}"
      cmd=($MPIRUN -np "$RANKS" "$TRAINER" "${COMMON[@]}" --optimizer "$opt" --batch-size "$pr" --seed "$seed" \
           --metrics-out "$base.jsonl" "${EXTRA[@]}")
      if [ "$DRY" = 1 ]; then
        printf '%q ' "${cmd[@]}"; echo ">$base.log 2>&1"
        continue
      fi
      if has_summary "$base.jsonl"; then
        echo "   skip  $opt b$g s$seed (summary exists: test acc $(json_field "$base.jsonl" summary test_acc))"
        continue
      fi
      rm -f "$base.jsonl"
      t1=$(date +%s)
      echo "   run   $opt b$g s$seed ..."
      "${cmd[@]}" >"$base.log" 2>&1
      rc=$?
      t2=$(date +%s)
      if [ $rc -eq 0 ] && has_summary "$base.jsonl"; then
        echo "         done in $(fmt_s $((t2 - t1))): test acc $(json_field "$base.jsonl" summary test_acc)"
      else
        echo "         FAILED (exit $rc) after $(fmt_s $((t2 - t1))); see $base.log:"
        { grep -i 'error' "$base.log" | head -n 5 | grep . || tail -n 5 "$base.log"; } | sed 's/^/      | /'
        FAILED+=("$opt b$g s$seed")
      fi
    done
  done
done
if [ "$DRY" = 1 ]; then
  echo
  echo "(dry run: nothing was trained; table and plots would be written to $OUT)"
  exit 0
fi
T1=$(date +%s)
WALL=$((T1 - T0))

# ---------------------------------------------------------------- table
# stats OPT G -> "n_ok n_total mean std" of test_acc in % over seeds
stats() {
  local vals="" ok=0 tot=0 v
  for seed in $SEEDS; do
    tot=$((tot + 1))
    v=$(json_field "$OUT/${1}_b${2}_s${seed}.jsonl" summary test_acc)
    [ -n "$v" ] && { vals="$vals $v"; ok=$((ok + 1)); }
  done
  echo "$vals" | awk -v ok="$ok" -v tot="$tot" '{ n=0; s=0; q=0
    for (i=1;i<=NF;i++){ x=$i*100; n++; s+=x; q+=x*x }
    m = n ? s/n : 0; sd = n>1 ? sqrt((q-n*m*m)/(n-1)) : 0; if (sd!=sd) sd=0
    printf "%d %d %.4f %.4f\n", ok, tot, m, sd }'
}
bytes_of() {
  local seed v
  for seed in $SEEDS; do
    v=$(json_field "$OUT/${1}_b${2}_s${seed}.jsonl" summary bytes_sent_per_step)
    [ -n "$v" ] && { echo "$v"; return; }
  done
  echo ""
}
label() { case "$1" in sgdm) echo SGDM;; signsgd) echo signSGD;; signum) echo signum;; ef-signsgd) echo EF-SignSGD;; *) echo "$1";; esac; }
abs_cell() {  # ok tot mean std
  if [ "$1" = 0 ]; then echo "failed"; return; fi
  local c
  if [ "$NSEED" -gt 1 ] && [ "$1" -gt 1 ]; then c=$(awk -v m="$3" -v s="$4" 'BEGIN{printf "%.2f ± %.2f", m, s}')
  else c=$(awk -v m="$3" 'BEGIN{printf "%.2f", m}'); fi
  [ "$1" -lt "$2" ] && c="$c (failed $(( $2 - $1 ))/$2 seeds)"
  echo "$c"
}

TABLE="$OUT/table.md"
{
  echo "# efsign reproduction of Table 1 ($MODE mode)"
  echo
  echo "$DSNAME / $MODEL, preset \`$PRESET\`, W=$RANKS ranks, $EPOCHS epochs, seeds: $SEEDS$( [ "$RESET" = 1 ] && echo ', state reset at lr milestones')."
  echo "Test accuracy after the last epoch. SGDM column: absolute accuracy in % (mean$( [ "$NSEED" -gt 1 ] && echo ' ± std') over seeds);"
  echo "the other columns: GAP to SGDM in percentage points (negative = worse), as in the paper."
  echo
  hdr="| global batch (per rank) |"; sep="|---|"
  for opt in $OPTIMIZERS; do hdr="$hdr $(label "$opt") |"; sep="$sep---|"; done
  echo "$hdr"; echo "$sep"
  for g in $BATCHES; do
    read -r sok stot smean ssd <<<"$(stats sgdm "$g")"
    row="| $g ($((g / RANKS))) |"
    for opt in $OPTIMIZERS; do
      read -r ok tot mean sd <<<"$(stats "$opt" "$g")"
      if [ "$opt" = sgdm ]; then row="$row $(abs_cell "$ok" "$tot" "$mean" "$sd") |"
      elif [ "$ok" = 0 ]; then row="$row failed |"
      elif [ "$sok" = 0 ] || ! echo " $OPTIMIZERS " | grep -q " sgdm "; then row="$row n/a (no SGDM) |"
      else
        c=$(awk -v a="$mean" -v b="$smean" 'BEGIN{printf "%+.2f", a-b}')
        [ "$ok" -lt "$tot" ] && c="$c (failed $((tot - ok))/$tot seeds)"
        row="$row $c |"
      fi
    done
    echo "$row"
  done
  echo
  echo "## Absolute test accuracy (%) and bytes sent per rank per step"
  echo
  hdr="| global batch |"; sep="|---|"
  for opt in $OPTIMIZERS; do hdr="$hdr $(label "$opt") acc | $(label "$opt") bytes/step |"; sep="$sep---|---|"; done
  echo "$hdr"; echo "$sep"
  for g in $BATCHES; do
    row="| $g |"
    for opt in $OPTIMIZERS; do
      read -r ok tot mean sd <<<"$(stats "$opt" "$g")"
      b=$(bytes_of "$opt" "$g")
      row="$row $(abs_cell "$ok" "$tot" "$mean" "$sd") | ${b:-failed} |"
    done
    echo "$row"
  done
  if [ "$MODE" = full ]; then
    echo
    echo "## For reference: THE PAPER'S Table 1 (CIFAR-100 / ResNet-18; not measured here)"
    echo
    echo "| global batch | SGDM | signSGD | signum | EF-SignSGD |"
    echo "|---|---|---|---|---|"
    echo "| 128 | 75.35 | -2.21 | -3.15 | -0.92 |"
    echo "| 32 | 76.22 | -3.04 | -3.57 | -0.79 |"
    echo "| 8 | 74.91 | -36.35 | -6.6 | -0.64 |"
    [ "$DATASET" = cifar10 ] && echo && echo "(these paper numbers are for CIFAR-100/ResNet-18; this run is CIFAR-10/VGG-19)"
  fi
  echo
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "Failed runs (see the .log files): $(IFS=,; echo "${FAILED[*]}" | sed 's/,/, /g')"
    echo
  fi
  echo "Produced $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname) ($(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all) cores), W=$RANKS;"
  echo "wall time of this invocation (probes + runs, skipped runs not re-run): $(fmt_s "$WALL")."
} >"$TABLE"

echo
echo "== $TABLE"
cat "$TABLE"
echo

# ---------------------------------------------------------------- plots
find_plot_python() {
  PY=""
  for p in /usr/bin/python3 python3; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import matplotlib' >/dev/null 2>&1; then PY="$p"; return; fi
  done
}
find_plot_python
if [ -z "$PY" ] && command -v apt-get >/dev/null 2>&1; then  # Debian's plotting stack, installed when missing
  echo "installing python3-matplotlib for the plots"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -q --no-install-recommends python3-matplotlib >/dev/null 2>&1 || true
  find_plot_python
fi
if [ -n "$PY" ]; then
  "$PY" "$ROOT/bench/plot_curves.py" "$OUT" || echo "warning: plotting failed (table is unaffected)"
else
  echo "note: no python3 with matplotlib found; skipping plots (apt-get install -y python3-matplotlib)"
fi

echo "wall time: $(fmt_s "$WALL")"
[ ${#FAILED[@]} -eq 0 ] || { echo "FAILED runs: ${FAILED[*]}"; exit 1; }
exit 0

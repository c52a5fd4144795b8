#!/usr/bin/env bash
# Paper-reproduction harness for efsign (EF-SignSGD, Table 1 form), with the paper's
# protocol by default: 3 seeds, the paper's GLOBAL batch sizes (per rank = global / W),
# the paper's tuned learning rate scaled by batch / 128, and mean ± std over the seeds of
# both the last-epoch and the best-epoch test accuracy.
#
#   bench/reproduce.sh --quick                       # Fashion-MNIST convnet, W=2, 3 epochs
#   bench/reproduce.sh --full --data-dir DIR [--ranks W] [--dataset cifar100|cifar10]
#   bench/reproduce.sh --full --dry-run              # time estimate (CPU measured here, GPU derived)
#
# Options:
#   --ranks W            MPI ranks (default 2; 1 is the paper's single worker)
#   --batches "128 32"   GLOBAL batch sizes (quick "128 32", full "128 32 8": the paper's)
#   --seeds "1 2 3"      seeds (default "1 2 3", as the paper)
#   --epochs N           epochs per run (quick 3, full 200)
#   --optimizers "..."   default "sgdm signsgd signum ef-signsgd"
#   --dataset D          full mode: cifar100 (resnet18, default) | cifar10 (vgg19)
#   --data-dir DIR       data directory (required for --full, except with --dry-run)
#   --out DIR            default runs/reproduce-quick | runs/reproduce-full
#   --dry-run            print the time estimate and the commands; trains only the short timing
#                        probes (a few steps per optimizer and batch; --no-estimate: none)
#   --no-estimate        skip the timing probes
#   --no-plots           write the table only (no matplotlib, no attempt to install it)
#   --mpirun "CMD"       launcher (default: mpirun [--allow-run-as-root] --oversubscribe --bind-to none)
#   --no-reset           do not pass --reset-state-at-milestones
#   --trainer PATH       default build/efsign-train
#   -- EXTRA...          passed verbatim to every efsign-train call
#
# Output: OUT/{opt}_b{global}_s{seed}.jsonl (+ .log), OUT/table.md, OUT/*.png.
# Resumable at two levels: a run whose .jsonl ends with a complete summary is skipped; an
# interrupted run continues from its last epoch's checkpoint (OUT/{run}.ckpt, removed when
# the run completes), bit-identical to an uninterrupted one. Each run's options are kept
# in OUT/{run}.args: results made with other options are refused, never reused.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE=""
RANKS=2
BATCHES=""
SEEDS="1 2 3"
EPOCHS=""
OPTIMIZERS="sgdm signsgd signum ef-signsgd"
DATASET="cifar100"
DATA_DIR=""
OUT=""
DRY=0
PLOTS=1
ESTIMATE=1
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
    --no-estimate) ESTIMATE=0 ;;
    --no-plots) PLOTS=0 ;;
    --mpirun) MPIRUN="$2"; shift ;;
    --no-reset) RESET=0 ;;
    --trainer) TRAINER="$2"; shift ;;
    -h|--help) sed -n '2,/^set -u$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

[ -n "$MODE" ] || die "give --quick or --full (see --help)"
case "$RANKS" in ''|*[!0-9]*|0) die "--ranks must be a positive integer" ;; esac

# Per mode: the preset (which sets the model, the data set, the paper's schedule, momentum
# and weight decay), the training and test set sizes, and the forward multiply-adds per
# image of the model (for the GPU estimate; counted layer by layer for the CIFAR variants:
# ResNet-18 1.8M + 151.0M + 3 x 134.2M (stages 2-4: the strided conv, 3 convs, the 1x1
# shortcut) = 555M; VGG-19 = 398M).
if [ "$MODE" = quick ]; then
  PRESET=convnet-fashion-mnist
  DSNAME=fashion-mnist; MODEL=convnet; N_TRAIN=60000; N_TEST=10000; GMAC=""
  : "${BATCHES:=128 32}"; : "${EPOCHS:=3}"; : "${OUT:=runs/reproduce-quick}"
  MILESTONE_ARGS=(--lr-milestones $((EPOCHS - 1 > 0 ? EPOCHS - 1 : 1)))
else
  case "$DATASET" in
    cifar100) PRESET=resnet18-cifar100; DSNAME=CIFAR-100; MODEL=resnet18; GMAC=0.555 ;;
    cifar10)  PRESET=vgg19-cifar10;     DSNAME=CIFAR-10;  MODEL=vgg19;    GMAC=0.398 ;;
    *) die "--dataset must be cifar100 or cifar10" ;;
  esac
  N_TRAIN=50000; N_TEST=10000
  [ -n "$DATA_DIR" ] || [ "$DRY" = 1 ] || die "--full needs --data-dir DIR (CIFAR binary files); --dry-run works without"
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
for s in $SEEDS; do case "$s" in ''|*[!0-9]*) die "seed '$s' is not a non-negative integer" ;; esac; done

# The data directory, checked up front (the trainer says the same, per run).
if [ "$MODE" = full ] && [ -n "$DATA_DIR" ]; then
  if [ "$DATASET" = cifar100 ]; then need="train.bin test.bin"; sub=cifar-100-binary
  else need="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"; sub=cifar-10-batches-bin; fi
  for f in $need; do
    [ -r "$DATA_DIR/$f" ] || [ -r "$DATA_DIR/$sub/$f" ] ||
      die "--data-dir $DATA_DIR: no readable $f (expected the binary CIFAR files, directly or in $sub/)"
  done
fi

if [ -z "$MPIRUN" ]; then
  MPIRUN="mpirun --oversubscribe --bind-to none"
  [ "$(id -u)" = 0 ] && MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
fi
export OMP_NUM_THREADS=1

if [ ! -x "$TRAINER" ]; then
  if [ "$DRY" = 1 ]; then echo "warning: trainer $TRAINER not found/executable (dry run continues)"; ESTIMATE=0
  else die "trainer $TRAINER not found; build it first (cmake --build build)"; fi
fi

# The paper's protocol: the preset's schedule, the GLOBAL batch, the preset's tuned lr
# scaled by batch / 128 without warm-up (the paper: "lr scaled by batch/128").
COMMON=(--preset "$PRESET" --epochs "$EPOCHS" "${MILESTONE_ARGS[@]}" --scale-lr --warmup-epochs 0 --progress off)
[ "$RESET" = 1 ] && COMMON+=(--reset-state-at-milestones)
[ -n "$DATA_DIR" ] && COMMON+=(--data-dir "$DATA_DIR")
[ "$MODE" = full ] && [ -z "$DATA_DIR" ] && COMMON+=(--data-dir DIR)  # --dry-run without one: a placeholder

n_words() { set -- $1; echo $#; }
NOPT=$(n_words "$OPTIMIZERS"); NSEED=$(n_words "$SEEDS")

# json_field FILE EVENT KEY  -> value of KEY in the last record of EVENT (no python needed)
json_field() {
  grep "\"event\":\"$2\"" "$1" 2>/dev/null | tail -n 1 |
    sed -n "s/.*\"$3\":\"\{0,1\}\([^,\"}]*\)\"\{0,1\}[,}].*/\1/p"
}
# A run is complete when its last summary is not that of a run stopped early.
has_summary() { grep '"event":"summary"' "$1" 2>/dev/null | tail -n 1 | grep -q '"stopped_early":false'; }
# run_accs FILE -> "last best" test accuracy in %: the summary's (the last epoch's) and the
# best over the epochs (the last record of each epoch: a resumed epoch's replaces the
# partial one written when the run stopped).
run_accs() {
  awk 'function num(k,   m) { if (match($0, "\"" k "\":[^,}]*")) return substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); return "" }
       /"event":"epoch"/ { acc[num("epoch")] = num("test_acc") }
       /"event":"summary"/ { last = num("test_acc") }
       END { if (last == "") exit; best = -1; for (e in acc) if (acc[e] + 0 > best) best = acc[e] + 0
             printf "%.4f %.4f\n", 100 * last, 100 * best }' "$1" 2>/dev/null
}
fmt_s() { awk -v s="$1" 'BEGIN{s=int(s+0.5); printf "%dh%02dm%02ds", s/3600, (s%3600)/60, s%60}'; }

mkdir -p "$OUT" || die "cannot create $OUT"
T0=$(date +%s)

echo "== efsign paper reproduction ($MODE): $DSNAME / $MODEL, preset $PRESET, W=$RANKS ranks"
echo "   global batches: $BATCHES (per rank = global / $RANKS) | optimizers: $OPTIMIZERS | seeds: $SEEDS | epochs: $EPOCHS"
echo "   lr: the preset's tuned lr x global batch / 128 (--scale-lr, no warm-up)$( [ "$RESET" = 1 ] && echo '; error and momentum zeroed at milestones')"
echo "   out: $OUT | launcher: $MPIRUN -np $RANKS"
echo

# ---------------------------------------------------------------- time estimate
# CPU: measured here. Every optimizer at every batch runs 2 epochs of a few steps on data
# of the real shape (synthetic 28x28 images for quick; zero-filled CIFAR files for full,
# so that no data set is needed); the second epoch's step_time_ms (warm, without the
# evaluation) is the step time. Per run: steps x epochs x step time, plus the test-set
# evaluation every epoch (a forward pass: ~1/3 of a training step per image), plus the
# probe's fixed cost (start-up, data, checks).
# GPU: an ESTIMATE, not measured (see REPRODUCE.md): the model's FLOPs at an assumed
# sustained rate, with a floor per step for the kernel launches of a small batch.
GPU_TFLOPS=${GPU_TFLOPS:-40}       # assumed sustained TF32 rate of one H100/H200, TFLOP/s
GPU_STEP_MS=${GPU_STEP_MS:-3}      # assumed floor per training step, ms (~400 kernels)
if [ "$ESTIMATE" = 1 ]; then
  PROBE_DIR=$(mktemp -d /tmp/efsign-probe-XXXXXX)
  trap 'rm -rf "$PROBE_DIR"' EXIT
  if [ "$MODE" = quick ]; then
    PROBE_STEPS=5
    PROBE_DATA=(--dataset synthetic --synthetic-train 4096 --synthetic-test 64)
  else
    PROBE_STEPS=2
    if [ "$DATASET" = cifar100 ]; then rec=3074; tr=train.bin; te=test.bin; else rec=3073; tr=data_batch_1.bin; te=test_batch.bin; fi
    maxg=0; for g in $BATCHES; do [ "$g" -gt "$maxg" ] && maxg=$g; done
    head -c $(( (maxg * PROBE_STEPS + maxg) * rec )) /dev/zero >"$PROBE_DIR/$tr"
    head -c $(( 64 * rec )) /dev/zero >"$PROBE_DIR/$te"
    if [ "$DATASET" = cifar10 ]; then for i in 2 3 4 5; do cp "$PROBE_DIR/$te" "$PROBE_DIR/data_batch_$i.bin"; done; fi
    PROBE_DATA=(--data-dir "$PROBE_DIR")
  fi
  echo "== expected wall time"
  echo "   CPU, measured on this machine: $(getconf _NPROCESSORS_ONLN) cores, load average $(cut -d' ' -f1-3 /proc/loadavg),"
  echo "   probes of 2 x $PROBE_STEPS steps per optimizer and batch on data of the real shape (the second epoch timed)"
  CPU_TOTAL=0; EST_OK=1
  for g in $BATCHES; do
    for opt in $OPTIMIZERS; do
      pf="$OUT/probe_${opt}_b${g}.jsonl"
      rm -f "$pf"
      t1=$(date +%s.%N)
      if $MPIRUN -np "$RANKS" "$TRAINER" --preset "$PRESET" "${PROBE_DATA[@]}" --optimizer "$opt" --global-batch "$g" \
            --epochs 2 --steps-per-epoch "$PROBE_STEPS" --seed 1 --progress off --metrics-out "$pf" "${EXTRA[@]}" \
            >"$OUT/probe_${opt}_b${g}.log" 2>&1 && has_summary "$pf"; then
        wall=$(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        st=$(json_field "$pf" epoch step_time_ms)
        tt=$(json_field "$pf" summary train_time_s)
        secs=$(awk -v n="$N_TRAIN" -v nt="$N_TEST" -v g="$g" -v e="$EPOCHS" -v s="$NSEED" -v st="$st" -v w="$wall" -v tt="$tt" \
          'BEGIN{spe=int((n+g-1)/g); train=spe*st/1000; eval=nt*(st/1000/g)/3; fixed=w-tt; if (fixed<0) fixed=0
                 printf "%.0f", s*(e*(train+eval)+fixed)}')
        CPU_TOTAL=$((CPU_TOTAL + secs))
        printf "   batch %4d %-10s %8.1f ms/step x %5d steps x %d epochs x %d seeds (+eval, start-up) -> %s\n" \
          "$g" "$opt" "$st" $(( (N_TRAIN + g - 1) / g )) "$EPOCHS" "$NSEED" "$(fmt_s "$secs")"
      else
        EST_OK=0
        echo "   batch $g $opt: no estimate: the probe failed -- see $OUT/probe_${opt}_b${g}.log:"
        { grep -i 'error' "$OUT/probe_${opt}_b${g}.log" | head -n 3 | grep . || tail -n 3 "$OUT/probe_${opt}_b${g}.log"; } 2>/dev/null | sed 's/^/      | /'
      fi
    done
  done
  if [ "$EST_OK" = 1 ]; then
    echo "   CPU TOTAL (measured step times, $NOPT optimizers x $NSEED seeds x $(n_words "$BATCHES") batches, one after the other): $(fmt_s "$CPU_TOTAL")"
  else
    echo "   CPU TOTAL: incomplete (a probe failed)"
  fi
  if [ -n "$GMAC" ]; then
    echo "   GPU, ONE H100/H200-class GPU: an ESTIMATE derived from FLOPs, NOT measured (REPRODUCE.md says how):"
    echo "   $MODEL: $GMAC GMAC forward per image -> training ~3x forward; assumed ${GPU_TFLOPS} TFLOP/s sustained"
    echo "   (GPU_TFLOPS) and at least ${GPU_STEP_MS} ms per step (GPU_STEP_MS); evaluation 1x forward per test image"
    GPU_TOTAL=0
    for g in $BATCHES; do
      secs=$(awk -v n="$N_TRAIN" -v nt="$N_TEST" -v g="$g" -v e="$EPOCHS" -v r="$((NOPT * NSEED))" -v gm="$GMAC" \
                 -v tf="$GPU_TFLOPS" -v fl="$GPU_STEP_MS" \
        'BEGIN{spe=int((n+g-1)/g); step=(6*gm*1e9*g)/(tf*1e12); if (step<fl/1000) step=fl/1000
               ev=nt*2*gm*1e9/(tf*1e12); printf "%.0f", r*e*(spe*step+ev)}')
      GPU_TOTAL=$((GPU_TOTAL + secs))
      printf "   batch %4d: %d runs x %d epochs -> %s (estimate)\n" "$g" "$((NOPT * NSEED))" "$EPOCHS" "$(fmt_s "$secs")"
    done
    echo "   GPU TOTAL (estimate, one run after another on one GPU): $(fmt_s "$GPU_TOTAL")"
  fi
  echo
  if [ "$EST_OK" = 0 ] && [ "$DRY" = 0 ]; then
    die "a probe failed; fix the setup (trainer, launcher) or use --no-estimate"
  fi
fi

# ---------------------------------------------------------------- runs
# Each run's options are recorded next to its results (OUT/{run}.args). Results or a
# checkpoint made with other options (another --epochs, --ranks, --no-reset, EXTRA ...)
# are never reused silently: the script stops before training anything and names them.
run_args() { printf '%q ' -np "$RANKS" "${COMMON[@]}" --optimizer "$1" --global-batch "$2" --seed "$3" "${EXTRA[@]}"; }
if [ "$DRY" = 0 ]; then
  STALE=()
  for g in $BATCHES; do for seed in $SEEDS; do for opt in $OPTIMIZERS; do
    base="$OUT/${opt}_b${g}_s${seed}"
    [ -e "$base.jsonl" ] || [ -e "$base.ckpt" ] || continue
    if [ ! -f "$base.args" ]; then STALE+=("$base: no record of its options (made by an older reproduce.sh)")
    elif [ "$(cat "$base.args")" != "$(run_args "$opt" "$g" "$seed")" ]; then
      STALE+=("$base: made with: $(cat "$base.args")")
    fi
  done; done; done
  if [ ${#STALE[@]} -gt 0 ]; then
    printf '   %s\n' "${STALE[@]}" >&2
    die "$OUT holds results made with other options than this run's ($(run_args OPT G SEED)); use another --out, or move them away"
  fi
fi
echo "== runs"
FAILED=()
for g in $BATCHES; do
  for seed in $SEEDS; do
    for opt in $OPTIMIZERS; do
      base="$OUT/${opt}_b${g}_s${seed}"
      resume=()
      [ -f "$base.ckpt/manifest.json" ] && resume=(--resume)
      cmd=($MPIRUN -np "$RANKS" "$TRAINER" "${COMMON[@]}" --optimizer "$opt" --global-batch "$g" --seed "$seed" \
           --metrics-out "$base.jsonl" --checkpoint-dir "$base.ckpt" "${resume[@]}" "${EXTRA[@]}")
      if [ "$DRY" = 1 ]; then
        printf '%q ' "${cmd[@]}"; echo ">>$base.log 2>&1"
        continue
      fi
      if has_summary "$base.jsonl"; then
        echo "   skip  $opt b$g s$seed (complete: test acc last/best $(run_accs "$base.jsonl" | sed 's/ /\//') %)"
        rm -rf "$base.ckpt"
        continue
      fi
      if [ ${#resume[@]} -eq 0 ]; then rm -rf "$base.ckpt" "$base.jsonl" "$base.log"; fi
      run_args "$opt" "$g" "$seed" >"$base.args"
      t1=$(date +%s)
      echo "   run   $opt b$g s$seed$( [ ${#resume[@]} -gt 0 ] && echo " (resuming from $base.ckpt)") ..."
      "${cmd[@]}" >>"$base.log" 2>&1
      rc=$?
      t2=$(date +%s)
      if [ $rc -eq 0 ] && has_summary "$base.jsonl"; then
        echo "         done in $(fmt_s $((t2 - t1))): test acc last/best $(run_accs "$base.jsonl" | sed 's/ /\//') %"
        rm -rf "$base.ckpt"
      else
        echo "         FAILED (exit $rc) after $(fmt_s $((t2 - t1))); see $base.log (run again to resume):"
        { grep -i 'error' "$base.log" | tail -n 5 | grep . || tail -n 5 "$base.log"; } | sed 's/^/      | /'
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
# stats OPT G KIND (last|best) -> "n_ok n_total mean std" of the test accuracy in % over seeds
stats() {
  local ok=0 tot=0 seed v vals=""
  for seed in $SEEDS; do
    tot=$((tot + 1))
    has_summary "$OUT/${1}_b${2}_s${seed}.jsonl" || continue
    v=$(run_accs "$OUT/${1}_b${2}_s${seed}.jsonl")
    [ -n "$v" ] || continue
    [ "$3" = last ] && v=${v% *} || v=${v#* }
    vals="$vals $v"; ok=$((ok + 1))
  done
  echo "$vals" | awk -v ok="$ok" -v tot="$tot" '{ n=0; s=0; q=0
    for (i=1;i<=NF;i++){ x=$i; n++; s+=x; q+=x*x }
    m = n ? s/n : 0; v = n>1 ? (q-n*m*m)/(n-1) : 0; sd = v > 0 ? sqrt(v) : 0
    printf "%d %d %.4f %.4f\n", ok, tot, m, sd }'
}
# gap OPT G KIND -> "n mean std" of the per-seed difference to SGDM (same seed: same
# initialisation and data order), in percentage points
gap() {
  local seed a b vals="" n=0
  for seed in $SEEDS; do
    has_summary "$OUT/${1}_b${2}_s${seed}.jsonl" && has_summary "$OUT/sgdm_b${2}_s${seed}.jsonl" || continue
    a=$(run_accs "$OUT/${1}_b${2}_s${seed}.jsonl"); b=$(run_accs "$OUT/sgdm_b${2}_s${seed}.jsonl")
    if [ "$3" = last ]; then a=${a% *}; b=${b% *}; else a=${a#* }; b=${b#* }; fi
    vals="$vals $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4f", a - b }')"; n=$((n + 1))
  done
  echo "$vals" | awk -v n="$n" '{ s=0; q=0; for (i=1;i<=NF;i++){ s+=$i; q+=$i*$i }
    m = n ? s/n : 0; v = n>1 ? (q-n*m*m)/(n-1) : 0; printf "%d %.4f %.4f\n", n, m, (v > 0 ? sqrt(v) : 0) }'
}
# curve_best OPT G -> "n_seeds best_mean epoch": the paper's "best mean test accuracy": the
# test accuracy averaged over the complete seeds epoch by epoch, then its best epoch.
curve_best() {
  local seed files=()
  for seed in $SEEDS; do
    has_summary "$OUT/${1}_b${2}_s${seed}.jsonl" && files+=("$OUT/${1}_b${2}_s${seed}.jsonl")
  done
  [ ${#files[@]} -gt 0 ] || { echo "0 0 0"; return; }
  awk 'function num(k,   m) { if (match($0, "\"" k "\":[^,}]*")) return substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); return "" }
       FNR == 1 { f++ }
       /"event":"epoch"/ { acc[f, num("epoch") + 0] = num("test_acc") + 0; if (num("epoch") + 0 > emax) emax = num("epoch") + 0 }
       END { best = -1; be = 0
             for (e = 1; e <= emax; e++) { s = 0; n = 0
               for (i = 1; i <= f; i++) if ((i, e) in acc) { s += acc[i, e]; n++ }
               if (n == f && s / n > best) { best = s / n; be = e } }
             printf "%d %.4f %d\n", f, 100 * best, be }' "${files[@]}"
}
table_curve() {
  local hdr="| global batch (per rank) |" sep="|---|" g opt row n m e n0 m0 e0
  for opt in $OPTIMIZERS; do hdr="$hdr $(label "$opt") |"; sep="$sep---|"; done
  echo "$hdr"; echo "$sep"
  for g in $BATCHES; do
    row="| $g ($((g / RANKS))) |"
    read -r n0 m0 e0 <<<"$(curve_best sgdm "$g")"
    for opt in $OPTIMIZERS; do
      read -r n m e <<<"$(curve_best "$opt" "$g")"
      if [ "$n" = 0 ]; then row="$row failed |"
      elif [ "$opt" = sgdm ]; then row="$row $(awk -v m="$m" 'BEGIN{printf "%.2f", m}') (epoch $e) |"
      elif [ "$n0" = 0 ]; then row="$row n/a (no SGDM) |"
      else row="$row $(awk -v a="$m" -v b="$m0" 'BEGIN{printf "%+.2f", a - b}') (epoch $e) |"
      fi
    done
    echo "$row"
  done
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
pm() { if [ "$3" -gt 1 ]; then awk -v m="$1" -v s="$2" 'BEGIN{printf "%.2f ± %.2f", m, s}'; else awk -v m="$1" 'BEGIN{printf "%.2f", m}'; fi; }
abs_cell() {  # ok tot mean std
  if [ "$1" = 0 ]; then echo "failed"; return; fi
  local c; c=$(pm "$3" "$4" "$1")
  [ "$1" -lt "$2" ] && c="$c ($1/$2 seeds)"
  echo "$c"
}
table1() {  # table1 KIND
  local hdr="| global batch (per rank) |" sep="|---|" g opt row ok tot mean sd n gm gs
  for opt in $OPTIMIZERS; do hdr="$hdr $(label "$opt") |"; sep="$sep---|"; done
  echo "$hdr"; echo "$sep"
  for g in $BATCHES; do
    row="| $g ($((g / RANKS))) |"
    for opt in $OPTIMIZERS; do
      read -r ok tot mean sd <<<"$(stats "$opt" "$g" "$1")"
      if [ "$opt" = sgdm ]; then row="$row $(abs_cell "$ok" "$tot" "$mean" "$sd") |"; continue; fi
      read -r n gm gs <<<"$(gap "$opt" "$g" "$1")"
      if [ "$ok" = 0 ]; then row="$row failed |"
      elif ! echo " $OPTIMIZERS " | grep -q " sgdm " || [ "$n" = 0 ]; then row="$row n/a (no SGDM) |"
      else
        c=$(awk -v m="$gm" 'BEGIN{printf "%+.2f", m}')
        [ "$n" -gt 1 ] && c="$c ± $(awk -v s="$gs" 'BEGIN{printf "%.2f", s}')"
        [ "$n" -lt "$tot" ] && c="$c ($n/$tot seeds)"
        row="$row $c |"
      fi
    done
    echo "$row"
  done
}

TABLE="$OUT/table.md"
{
  echo "# efsign reproduction of Table 1 ($MODE mode)"
  echo
  echo "$DSNAME / $MODEL, preset \`$PRESET\`, W=$RANKS ranks, global batch as the rows (per rank in parentheses),"
  echo "lr = the preset's tuned lr x global batch / 128, $EPOCHS epochs, seeds: $SEEDS$( [ "$RESET" = 1 ] && echo ', error and momentum zeroed at lr milestones')."
  echo "SGDM column: test accuracy in % (mean ± sample std over seeds); the other columns: the gap to SGDM in"
  echo "percentage points (mean ± std of the per-seed differences; negative = worse), as in the paper."
  echo
  echo "## Best epoch of the mean curve (the paper's \"best mean test accuracy\")"
  echo
  echo "Test accuracy averaged over the seeds epoch by epoch, at that curve's best epoch; gaps are"
  echo "differences of those best means (no std: one number per curve)."
  echo
  table_curve
  echo
  echo "## Best epoch of each seed (mean ± std over seeds; at least the row above)"
  echo
  table1 best
  echo
  echo "## Last-epoch test accuracy"
  echo
  table1 last
  echo
  echo "## Absolute test accuracy (%), last and best epoch, and bytes handed to the network per rank per step"
  echo
  hdr="| global batch | optimizer | last epoch | best epoch | bytes/step |"
  echo "$hdr"; echo "|---|---|---|---|---|"
  for g in $BATCHES; do
    for opt in $OPTIMIZERS; do
      read -r ok tot mean sd <<<"$(stats "$opt" "$g" last)"
      read -r okb totb meanb sdb <<<"$(stats "$opt" "$g" best)"
      b=$(bytes_of "$opt" "$g")
      echo "| $g | $(label "$opt") | $(abs_cell "$ok" "$tot" "$mean" "$sd") | $(abs_cell "$okb" "$totb" "$meanb" "$sdb") | ${b:-failed} |"
    done
  done
  if [ "$MODE" = full ]; then
    echo
    echo "## For reference: THE PAPER'S Table 1 (CIFAR-100 / ResNet-18, one worker; not measured here)"
    echo
    echo "| global batch | SGDM | signSGD | signum | EF-SignSGD |"
    echo "|---|---|---|---|---|"
    echo "| 128 | 75.35 | -2.21 | -3.15 | -0.92 |"
    echo "| 32 | 76.22 | -3.04 | -3.57 | -0.79 |"
    echo "| 8 | 74.91 | -36.35 | -6.6 | -0.64 |"
    [ "$DATASET" = cifar10 ] && echo && echo "(these paper numbers are for CIFAR-100/ResNet-18; this run is CIFAR-10/VGG-19: Table 4 of the paper)"
  fi
  echo
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo "Failed runs (see the .log files; run the script again to resume them): $(IFS=,; echo "${FAILED[*]}" | sed 's/,/, /g')"
    echo
  fi
  echo "Produced $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname) ($(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)), W=$RANKS;"
  echo "wall time of this invocation (probes + runs, complete runs not re-run): $(fmt_s "$WALL"). Accuracies do not depend on"
  echo "the machine's load (every run is deterministic given its seed); the wall time does."
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
PY=""
[ "$PLOTS" = 1 ] && find_plot_python
if [ "$PLOTS" = 1 ] && [ -z "$PY" ] && command -v apt-get >/dev/null 2>&1; then  # Debian's plotting stack, installed when missing
  echo "installing python3-matplotlib for the plots"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo -n"  # -n: never wait for a password
  $sudo apt-get install -y -q --no-install-recommends python3-matplotlib >/dev/null 2>&1 || true
  find_plot_python
fi
if [ -n "$PY" ]; then
  "$PY" "$ROOT/bench/plot_curves.py" "$OUT" || echo "warning: plotting failed (table is unaffected)"
elif [ "$PLOTS" = 1 ]; then
  echo "note: no python3 with matplotlib found; skipping plots (apt-get install -y python3-matplotlib)"
fi

echo "wall time: $(fmt_s "$WALL")"
[ ${#FAILED[@]} -eq 0 ] || { echo "FAILED runs: ${FAILED[*]}"; exit 1; }
exit 0

#!/usr/bin/env bash
# The one test command: install what is missing, then lint, Python tests, module unit tests and
# ansible-test sanity, the installed-collection check and every Molecule scenario. Exits non-zero
# if any step fails.
#
# Set-up (apt, then the venv beside the image, then the preflight) runs first. The checks
# and the scenarios then run as jobs on VPSB_JOBS workers (default: one more than the CPUs, since
# a scenario spends part of its time waiting on its containers), longest first; each job's output
# is printed whole when it ends (logs in .cache/test-logs/). The table at the end times every step, set-up included: the set-up
# span plus the busiest worker add up to the wall time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
logs="$root/.cache/test-logs"
rm -rf "$logs"
mkdir -p "$logs"
t0=$SECONDS
results="$logs/results"
: >"$results"

# One row of the table: name, worker, start and duration (seconds from t0), status.
record() { printf '%s|%s|%s|%s|%s\n' "$1" "$2" "$3" "$4" "$5" >>"$results"; }

# Run a step with its output in its own log, then print the log whole (under a lock, so that two
# workers never interleave their output).
step() {
  local name=$1 worker=$2; shift 2
  local start=$((SECONDS - t0)) status=passed
  "$@" >"$logs/$name.log" 2>&1 || status=FAILED
  local dur=$((SECONDS - t0 - start))
  {
    flock 8
    printf '\n################ %s: %s in %d s ################\n' "$name" "$status" "$dur"
    cat "$logs/$name.log"
  } 8>"$logs/.print.lock"
  record "$name" "$worker" "$start" "$dur" "$status"
  [ "$status" = passed ]
}

# Set-up: apt first (the others need its packages), then the venv and the image side by side (pip
# waits on the index, debootstrap on the mirror and dpkg), then the preflight, which checks both. A
# failed step stops the run here.
setup_ok=1
step bootstrap-apt setup "$here/bootstrap.sh" apt || setup_ok=0
if ((setup_ok)); then
  step bootstrap-venv setup-venv "$here/bootstrap.sh" venv & venv_pid=$!
  step image setup-image "$here/build-image.sh" & image_pid=$!
  wait "$venv_pid" || setup_ok=0
  wait "$image_pid" || setup_ok=0
fi
((setup_ok)) && { step preflight setup "$here/preflight.sh" || setup_ok=0; }

if ((setup_ok)); then
  # The jobs, longest first (seconds seen on this 2-core machine in the comments of the scenario
  # list). A job is "name command...".
  mapfile -t scenarios < <("$here/test-molecule.sh" --list-by-duration)
  queue="$logs/queue"
  {
    for s in "${scenarios[@]}"; do echo "molecule-$s $here/test-molecule.sh $s"; done
    echo "python-tests $here/test-python.sh"
    echo "lint $here/lint.sh"
    echo "module-tests+sanity $here/test-modules.sh"
    echo "collection-install $here/test-collection.sh"
  } >"$queue"
  # The two longest scenarios (the kernel tier and the pipeline, each 15-20 min under this load)
  # start first, the host checks next on the third worker, then the other scenarios, longest first.
  { head -n2 "$queue"; grep -v '^molecule-' "$queue"; tail -n +3 "$queue" | grep '^molecule-'; } \
    >"$queue.ordered"
  mv "$queue.ordered" "$queue"

  pop() {
    local line
    {
      flock 9
      line=$(head -n1 "$queue")
      sed -i '1d' "$queue"
    } 9>"$logs/.queue.lock"
    printf '%s' "$line"
  }
  # The first two jobs are the critical path: the wall time is the later of their ends. The others
  # fill the CPUs they leave idle, at a lower priority (nice 10, inherited by their containers),
  # so that they never slow them down.
  critical=" $(head -n2 "$queue" | cut -d' ' -f1 | tr '\n' ' ')"
  worker() {
    local id=$1 job failed=0 prio
    while job=$(pop) && [ -n "$job" ]; do
      prio=(nice -n 10)
      [[ "$critical" == *" ${job%% *} "* ]] && prio=()
      # shellcheck disable=SC2086 # "name command args": split on purpose
      step ${job%% *} "w$id" "${prio[@]}" ${job#* } || failed=1
    done
    return $failed
  }
  export VPSB_SETUP_DONE=1
  jobs=${VPSB_JOBS:-$(($(nproc) + 1))}
  pids=()
  for i in $(seq 1 "$jobs"); do worker "$i" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || true; done
fi

wall=$((SECONDS - t0))
status=0
# A failed step's log was printed when it ended, possibly far above; its last lines are printed
# again here, next to the summary, where a reader of the tail of the output sees them.
while IFS='|' read -r name _ _ _ st; do
  [ "$st" = passed ] && continue
  printf '\n################ %s FAILED: the last 40 lines of %s ################\n' \
    "$name" ".cache/test-logs/$name.log"
  tail -n 40 "$logs/$name.log"
done <"$results"
echo
echo "Summary (seconds; set-up runs alone, then the jobs on $((${jobs:-1})) workers):"
printf '  %-28s %-7s %6s %6s  %s\n' step worker start took result
while IFS='|' read -r name worker start dur st; do
  printf '  %-28s %-7s %6s %6s  %s\n' "$name" "$worker" "$start" "$dur" "$st"
  [ "$st" = passed ] || status=1
done <"$results"
((setup_ok)) || status=1
# Set-up ends when its last step does (the venv and the image overlap); the jobs start then.
setup_s=$(awk -F'|' '$2 ~ /^setup/ && $3 + $4 > e { e = $3 + $4 } END { print e + 0 }' "$results")
busiest=$(awk -F'|' '$2 !~ /^setup/ { w[$2] += $4 } END { m = 0; for (k in w) if (w[k] > m) m = w[k]; print m }' "$results")
printf '  set-up %d s + busiest worker %d s = %d s; wall time %d s (%d min %d s)\n' \
  "$setup_s" "$busiest" $((setup_s + busiest)) "$wall" $((wall / 60)) $((wall % 60))
[ "$status" -eq 0 ] && echo "test: all passed" || echo "test: FAILED (see the steps marked FAILED above)"
exit $status

#!/bin/bash
# One queue of long-protocol student runs (issue #13), run after run; a finished run (its
# JSON exists) is skipped, an unfinished one resumes from its last.pt.
#   bash zoo/wip/queue.sh WORKTREE RUN...      e.g. RUN = plain-s2, kd-s1, nwsd-0.3-s1, online-s0
# WORKTREE: a git worktree of this repository pinned at a commit (editing the code must not
# break a running job). Paths are the ones the finished runs' JSON name; keep them.
set -e
WT=$1; shift
PY=/work/main/.venv/bin/python
DATA=/work/shared/data/modelnet40_1024
export POINTKD_NATIVE_OPS=1 OMP_WAIT_POLICY=PASSIVE
cd "$WT"
for run in "$@"; do
  mode=${run%-s*}; seed=${run##*-s}
  case $mode in
    plain) src=() ;;
    online) src=(--teacher /work/main/zoo/student_l_modelnet40_cpu.pt --set distill.tau=1) ;;
    *) src=(--records /work/main/zoo/records_student_l_modelnet40_k20 --set distill.tau=1) ;;
  esac
  $PY bench/bench_students.py "${src[@]}" --data $DATA --modes "$mode" --seeds "$seed" \
      --epochs 100 --workers 1 --runs /work/runs-strong \
      --results /work/main/bench/results/students_strong
done

#!/bin/bash
# Molecular dynamics of the ten cellulose fibrils (`molmnist simulate`, OpenMM) on Perlmutter GPU
# nodes inside ONE batch job, with the scheduler-file pattern of build_scheduler_file.sh: a dask
# scheduler, one dask worker per GPU (each sees only its own GPU and offers the worker resource
# GPU=1), and `molmnist simulate --resources GPU=1` submitting one task per fibril, so that each
# GPU runs one simulation at a time.
#
#   sbatch -A PROJECT_g -N 3 -t 06:00:00 deploy/nersc/simulate_gpu.sh OUT [EXTRA simulate options]
#   e.g.  ... simulate_gpu.sh $SCRATCH/molmnist/md --frames 2000 --stride 10 --equilibrate 10000
#
# PROJECT_g: your project's GPU allocation (e.g. m1234_g). 3 nodes = 12 A100s for the ten fibrils:
# every fibril gets its own GPU at once; the job lasts as long as the 9x9 (about 3.3 h by the
# estimate in deploy/nersc/README.md, "Molecular dynamics"). With -N 1 the ten share 4 GPUs:
# about 4.4 h. Re-submitting the same command resumes: finished fibrils are skipped and the
# others go on from their last checkpoint (written every --checkpoint-minutes, default 5), so a
# walltime that runs out costs minutes, not hours.
#
#SBATCH -J molmnist-md
#SBATCH -C gpu
#SBATCH -q regular
#SBATCH -N 3
#SBATCH --gpus-per-node=4
#SBATCH -t 06:00:00
#SBATCH -o molmnist-md-%j.out
set -euo pipefail

OUT=${1:?usage: sbatch simulate_gpu.sh OUT [molmnist simulate options]}
shift
ENV_NAME=${MOLMNIST_ENV:-molmnist}   # the conda env of deploy/nersc/README.md, with .[md,nersc]
GPUS_PER_NODE=${GPUS_PER_NODE:-4}    # Perlmutter GPU node: 4 x A100, 64 cores (128 threads)
CPUS_PER_GPU=${CPUS_PER_GPU:-32}     # hardware threads per worker: a quarter of a node
INTERFACE=${INTERFACE:-hsn0}

if type module >/dev/null 2>&1; then
    module load python
    conda activate "$ENV_NAME"
fi

NODES=${SLURM_JOB_NUM_NODES:-1}
NWORKERS=$((NODES * GPUS_PER_NODE))
SCHEDULER_FILE=$SCRATCH/molmnist/scheduler-md-$SLURM_JOB_ID.json
mkdir -p "$(dirname "$SCHEDULER_FILE")"
rm -f "$SCHEDULER_FILE"

srun --overlap -N 1 -n 1 -c 2 --gpus=0 \
    dask scheduler --scheduler-file "$SCHEDULER_FILE" --interface "$INTERFACE" --port 0 \
    --dashboard-address :8787 >"molmnist-md-scheduler-$SLURM_JOB_ID.log" 2>&1 &
SCHEDULER_PID=$!
for _ in $(seq 120); do [[ -s $SCHEDULER_FILE ]] && break; sleep 1; done
[[ -s $SCHEDULER_FILE ]] || { echo "scheduler did not start" >&2; exit 1; }

# One Slurm task per GPU: --gpus-per-task=1 makes Slurm set CUDA_VISIBLE_DEVICES to that GPU
# alone, so OpenMM's CUDA platform (device 0 of what it sees) never puts two runs on one GPU.
# The worker resource GPU=1 with `--resources GPU=1` below makes each task wait for a free one.
srun --overlap -N "$NODES" -n "$NWORKERS" --ntasks-per-node="$GPUS_PER_NODE" \
    -c "$CPUS_PER_GPU" --gpus-per-task=1 \
    dask worker --scheduler-file "$SCHEDULER_FILE" --interface "$INTERFACE" \
    --nworkers 1 --nthreads 1 --resources GPU=1 \
    --local-directory "${TMPDIR:-/tmp}" --death-timeout 120 --no-dashboard \
    >"molmnist-md-workers-$SLURM_JOB_ID.log" 2>&1 &
WORKERS_PID=$!

cleanup() {
    python -c "from distributed import Client; Client(scheduler_file='$SCHEDULER_FILE', timeout=30).shutdown()" \
        >/dev/null 2>&1 || true
    kill "$WORKERS_PID" "$SCHEDULER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$SCHEDULER_FILE"
}
trap cleanup EXIT

time molmnist simulate -o "$OUT" --solvent explicit --platform CUDA --resources GPU=1 \
    --scheduler-file "$SCHEDULER_FILE" "$@"
echo "next: molmnist build $OUT/run.toml -o OUT_STORE (CPU nodes: build_scheduler_file.sh)"

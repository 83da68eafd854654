#!/bin/bash
# Build a Molecular-MNIST dataset on Perlmutter CPU nodes inside ONE batch job, with the
# scheduler-file pattern NERSC documents for Dask: a scheduler and the workers started by srun
# inside the allocation, and `molmnist build` connecting to them through a JSON file on $SCRATCH.
#
#   sbatch -A PROJECT deploy/nersc/build_scheduler_file.sh default OUT [SIZE]   # 1 debug node, 15 min
#   sbatch -A PROJECT -q regular -N 4 -t 01:00:00 deploy/nersc/build_scheduler_file.sh RUN.toml OUT [SIZE]
#
# PROJECT: your NERSC project (CPU allocation), as `iris` or `sacctmgr show assoc user=$USER`
# lists it, e.g. m1234. The defaults below, one node of the debug QOS for 15 minutes, are what
# the whole 1024 px Molecular-MNIST needs (deploy/nersc/README.md, "Expected node-hours");
# larger runs name their QOS, nodes and time. RUN.toml "default" builds Molecular-MNIST (the ten cellulose fibrils
# x 2,000 variants, made on the workers: no trajectory files). RUN.toml, its trajectory files
# and OUT must be on a file system every node sees ($SCRATCH, or CFS for the inputs). Re-submitting the same command resumes: blocks already in OUT are
# kept. Override the split of a node with WORKERS_PER_NODE / THREADS_PER_WORKER (see
# jobqueue.yaml beside this file for why 64 x 2 is the default).
#
#SBATCH -J molmnist-build
#SBATCH -C cpu
#SBATCH -q debug
#SBATCH -N 1
#SBATCH -t 00:15:00
#SBATCH -o molmnist-build-%j.out
# (-q/-N/-t above are defaults: the same options on the sbatch command line win; give -A PROJECT
# there, or add a line "#SBATCH -A PROJECT" here)
set -euo pipefail

RUN=${1:?usage: sbatch build_scheduler_file.sh RUN.toml OUT [SIZE]}
OUT=${2:?usage: sbatch build_scheduler_file.sh RUN.toml OUT [SIZE]}
SIZE=${3:-1024}
WORKERS_PER_NODE=${WORKERS_PER_NODE:-64}
THREADS_PER_WORKER=${THREADS_PER_WORKER:-2}
ENV_NAME=${MOLMNIST_ENV:-molmnist}   # the conda env of the install step (deploy/nersc/README.md)
# Perlmutter CPU node: 256 hardware threads, 512 GB of which ~480 GB for the workers (the
# rest: OS, Lustre client, /tmp on tmpfs). Overridable to try the script on another cluster.
CPUS_PER_NODE=${CPUS_PER_NODE:-256}
WORKER_MEM_PER_NODE_GB=${WORKER_MEM_PER_NODE_GB:-480}
INTERFACE=${INTERFACE:-hsn0}         # Slingshot high-speed network
SCHEDULER_CPUS=${SCHEDULER_CPUS:-2}  # hardware threads for the scheduler's step

if type module >/dev/null 2>&1; then
    module load python
    conda activate "$ENV_NAME"
fi
# One thread of BLAS/OpenMP per dask thread: the parallelism is dask's. (The workers' memory
# allocator needs nothing here: `molmnist build` registers a worker plugin that sets it on
# every worker of the scheduler, molmnist_dask/malloc.py.)
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

NODES=${SLURM_JOB_NUM_NODES:-1}
NWORKERS=$((NODES * WORKERS_PER_NODE))
# A node's hardware threads shared evenly: 4 per worker at 64 per node (2 cores).
CPUS_PER_WORKER=$((CPUS_PER_NODE / WORKERS_PER_NODE))
MEM_PER_WORKER=$((WORKER_MEM_PER_NODE_GB / WORKERS_PER_NODE))GB
SCHEDULER_FILE=$SCRATCH/molmnist/scheduler-$SLURM_JOB_ID.json
mkdir -p "$(dirname "$SCHEDULER_FILE")"
rm -f "$SCHEDULER_FILE"

echo "molmnist build: $RUN -> $OUT at ${SIZE}px on $NODES nodes," \
    "$NWORKERS workers x $THREADS_PER_WORKER threads ($MEM_PER_WORKER each)"

# The scheduler: one task on the first node. --overlap lets it share that node with the
# workers' step below (job steps do not share CPUs by default).
srun --overlap -N 1 -n 1 -c "$SCHEDULER_CPUS" \
    dask scheduler --scheduler-file "$SCHEDULER_FILE" --interface "$INTERFACE" --port 0 \
    --dashboard-address :8787 \
    >"molmnist-scheduler-$SLURM_JOB_ID.log" 2>&1 &
SCHEDULER_PID=$!

for _ in $(seq 120); do [[ -s $SCHEDULER_FILE ]] && break; sleep 1; done
[[ -s $SCHEDULER_FILE ]] || { echo "scheduler did not start; see molmnist-scheduler-$SLURM_JOB_ID.log" >&2; exit 1; }

# The workers: one Slurm task per dask worker, each bound to its own cores. (-n explicitly:
# srun would otherwise inherit an sbatch -n through SLURM_NTASKS.)
srun --overlap -N "$NODES" -n "$NWORKERS" --ntasks-per-node="$WORKERS_PER_NODE" \
    -c "$CPUS_PER_WORKER" \
    --cpu-bind=cores \
    dask worker --scheduler-file "$SCHEDULER_FILE" --interface "$INTERFACE" \
    --nworkers 1 --nthreads "$THREADS_PER_WORKER" --memory-limit "$MEM_PER_WORKER" \
    --local-directory "${TMPDIR:-/tmp}" --death-timeout 120 --no-dashboard \
    >"molmnist-workers-$SLURM_JOB_ID.log" 2>&1 &
WORKERS_PID=$!

cleanup() {
    # Ask the scheduler to shut the workers down, then make sure both steps are gone.
    python -c "from distributed import Client; Client(scheduler_file='$SCHEDULER_FILE', timeout=30).shutdown()" \
        >/dev/null 2>&1 || true
    kill "$WORKERS_PID" "$SCHEDULER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$SCHEDULER_FILE"
}
trap cleanup EXIT

# Start the build once most workers are in (all of them can straggle on a busy machine).
python - "$SCHEDULER_FILE" "$NWORKERS" <<'EOF'
import sys
from distributed import Client

client = Client(scheduler_file=sys.argv[1], timeout=120)
client.wait_for_workers(max(1, int(sys.argv[2]) * 9 // 10), timeout=600)
print(f"{len(client.scheduler_info()['workers'])} workers connected")
EOF

# The driver runs here, in the batch step on the first node: it only plans and submits.
if [ "$RUN" = default ]; then RUN_ARGS=(); else RUN_ARGS=("$RUN"); fi
time molmnist build "${RUN_ARGS[@]}" -o "$OUT" --size "$SIZE" --scheduler-file "$SCHEDULER_FILE"
molmnist info "$OUT"

#!/usr/bin/env bash
# Train the segmentation and restoration candidates on one CUDA GPU, all at once.
#   bash tasks/training/train_on_gpu.sh OUT_DIR NOISY_IMAGE
# NOISY_IMAGE: the real noisy confocal frame the CARE noise range is centred on
# (../shared/data/denoise_pairs/fmd_confocal_fish/noisy_Confocal_FISH_3.png; its clean twin is
# never read). Batches are drawn by DataLoader worker processes (--loader-workers), so the
# weights are reproducible for the same worker count, device and torch build.
# Which candidate ships is decided on held-out SIMULATED data (and CPU cost), never on real images
# (benchmarks/segmentation_accuracy.py sim_varied, benchmarks/restoration_accuracy.py simulated).
set -u
out=${1:?OUT_DIR}
noisy=${2:?NOISY_IMAGE}
mkdir -p "$out" /tmp/train-logs
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
care="python3 -m tasks.training.train_restoration --mode care --device cuda --threads 1
  --seed 0 --iterations 15000 --batch 16 --crop 96 --loader-workers 3 --noise-from $noisy"
unet="python3 -m tasks.training.train_unet --device cuda --threads 1 --seed 0 --batch 16
  --frames 160 --loader-workers 2"
$care --out "$out/care_a.pt" >/tmp/train-logs/care_a.log 2>&1 &
$care --channels 32 64 128 --out "$out/care_b.pt" >/tmp/train-logs/care_b.log 2>&1 &
$care --tissue-fraction 0.6 --sim-fraction 0.2 --out "$out/care_c.pt" \
  >/tmp/train-logs/care_c.log 2>&1 &
$unet --iterations 6000 --out "$out/unet_a.pt" >/tmp/train-logs/unet_a.log 2>&1 &
$unet --iterations 15000 --out "$out/unet_b.pt" >/tmp/train-logs/unet_b.log 2>&1 &
wait
tail -n 3 /tmp/train-logs/*.log
tar czf "$out/train-logs.tgz" -C /tmp train-logs

"""Pre-processing at scale: the shard build with the pool and the Beam runner, and storage options.

Builds ``--raw_dir`` once per runner into ``--out_root/<runner>`` (each from scratch), with the
build as a subprocess whose process tree is sampled every 0.2 s for resident memory (peak per
process: the driver and each worker), then reads the shards back to measure what an example
stores and what other encodings would cost::

  python -m data_prep.synthetic --layout=lrw --out_dir=/tmp/lrw1000 --num_words=25 \\
      --clips_per_word=40 --num_speakers=20 --num_workers=2
  nice -n 10 python -m benchmarks.build_scale --dataset=lrw --raw_dir=/tmp/lrw1000 \\
      --out_root=/tmp/lrw1000_out --num_workers=2 --json=/tmp/build_scale.json

Throughput of one runner against the other is a ratio, measured side by side: with
``--repeats=N`` the runners alternate (pool, beam, pool, beam, ...) so both see the same load
over the run, and the summary gives Beam's clips/s over the pool's for each adjacent pair and
their median.

Storage options measured on the built examples (what the model sees is kept equal unless said):

* ``mfcc_rows``: the MFCC rows once per clip ([4T + 24, 12]) instead of one 28-row window per
  frame ([T, 28, 12], ~7x overlap); the input pipeline would cut the windows (checked equal).
* ``jpeg_q95``: frames as JPEG at quality 95 instead of PNG: smaller, but lossy (PSNR given), so
  the model would see different pixels.
* ``png_64``: the 128 px crops downscaled to 64 px and PNG-encoded, an estimate of a 64 px
  build's frame bytes (a 64 px build warps from the source frame, not from the 128 px crop).
"""

import argparse
import glob
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from benchmarks import machine
from data_prep import schema
from data_prep import shards


def _tree_rss(root_pid: int) -> dict[int, int]:
  """Resident bytes of ``root_pid`` and all its descendants, by pid."""
  children = {}
  for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
      children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    except (OSError, ValueError, IndexError):
      continue
  rss, todo = {}, [root_pid]
  page = os.sysconf("SC_PAGE_SIZE")
  while todo:
    pid = todo.pop()
    try:
      with open(f"/proc/{pid}/statm") as f:
        rss[pid] = int(f.read().split()[1]) * page
    except (OSError, ValueError):
      pass
    todo.extend(children.get(pid, []))
  return rss


def run_build(args, runner: str) -> dict:
  out = os.path.join(args.out_root, runner)
  shutil.rmtree(out, ignore_errors=True)
  os.makedirs(args.out_root, exist_ok=True)
  command = [sys.executable, "-m", "data_prep.build", f"--dataset={args.dataset}",
             f"--raw_dir={args.raw_dir}", f"--out_dir={out}", f"--resolution={args.resolution}",
             f"--num_workers={args.num_workers}", f"--runner={runner}", "--no_progress"]
  start = time.time()
  cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
  log = open(out + ".log", "w")
  proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  peaks, stop = {}, threading.Event()

  def sample():
    while not stop.is_set():
      for pid, rss in _tree_rss(proc.pid).items():
        peaks[pid] = max(peaks.get(pid, 0), rss)
      time.sleep(0.2)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  code = proc.wait()
  stop.set()
  sampler.join()
  wall = time.time() - start
  cpu_end = resource.getrusage(resource.RUSAGE_CHILDREN)
  # CPU seconds of the build's whole process tree (children that have been waited for).
  cpu = {"user": cpu_end.ru_utime - cpu_start.ru_utime,
         "system": cpu_end.ru_stime - cpu_start.ru_stime}
  if code:
    raise RuntimeError(f"{runner} build failed ({code}); see {out}.log")
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  files = sorted(glob.glob(os.path.join(out, "talkface-*.tfrecord-*")))
  sizes = [os.path.getsize(p) for p in files]
  driver = peaks.pop(proc.pid, 0)
  workers = sorted(peaks.values(), reverse=True)
  return {
      "runner": runner, "wall_seconds": round(wall, 1), "run": manifest["run"],
      "cpu_seconds_user_system": [round(cpu["user"], 1), round(cpu["system"], 1)],
      "clips_used": manifest["totals"]["clips_used"],
      "clips_skipped": manifest["totals"]["clips_skipped"],
      "frames": sum(s["frames"] for s in manifest["splits"].values()),
      "peak_rss_mb_driver": round(driver / 2**20),
      # Beam's multi-processing DirectRunner also starts helper processes; the largest
      # num_workers processes are its workers.
      "peak_rss_mb_largest_children": [round(w / 2**20) for w in workers[:args.num_workers + 2]],
      "num_processes_seen": len(workers) + 1,
      "shards": len(files), "shard_bytes_total": sum(sizes),
      "shard_bytes_min_max": [min(sizes), max(sizes)] if sizes else None,
      "out_dir": out}


def storage_options(out_dir: str, max_examples: int) -> dict:
  """Bytes per example and per frame of the stored features, and of the other encodings."""
  builder = tfds.builder_from_directory(out_dir)
  totals = {k: 0 for k in ("frames_png", "mfcc_windows", "mfcc_rows", "landmarks", "audio",
                           "jpeg_q95", "png_64", "serialized")}
  psnr, frames_total, n = [], 0, 0
  for split in builder.info.splits:
    for example in tfds.as_numpy(builder.as_dataset(split=split)):
      if n >= max_examples:
        break
      n += 1
      frames, mfcc = example["frames"], example["mfcc"]
      t = len(frames)
      frames_total += t
      totals["frames_png"] += sum(len(b) for b in shards.encode_png(frames))
      totals["mfcc_windows"] += mfcc.nbytes
      # Window k is rows 4k .. 4k + 27 of one row sequence: store the rows once.
      rows = np.concatenate([mfcc[:, :4].reshape(-1, mfcc.shape[-1]), mfcc[-1, 4:]])
      rebuilt = np.stack([rows[4 * k:4 * k + schema.MFCC_WINDOW_ROWS] for k in range(t)])
      assert np.array_equal(rebuilt, mfcc), "MFCC windows are not 4-row shifts of one sequence"
      totals["mfcc_rows"] += rows.nbytes
      totals["landmarks"] += example["mouth_landmarks"].nbytes
      totals["audio"] += example["audio"].nbytes
      example_dict = {k: example[k] for k in ("frames", "mfcc", "mouth_landmarks", "audio")}
      example_dict.update(clip_id=example["clip_id"].decode(), speaker=example["speaker"].decode())
      totals["serialized"] += len(shards.serialize_example(example_dict, frames.shape[1]))
      for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        totals["jpeg_q95"] += buffer.tell()
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), np.float64)
        mse = np.mean((decoded - frame) ** 2)
        psnr.append(10 * np.log10(255 ** 2 / max(mse, 1e-10)))
        small = Image.fromarray(frame).resize((64, 64), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", compress_level=3)
        totals["png_64"] += buffer.tell()
  per_frame = {k: round(v / frames_total, 1) for k, v in totals.items()}
  return {"examples": n, "frames": frames_total, "bytes_per_frame": per_frame,
          "jpeg_q95_psnr_db_mean_min": [round(float(np.mean(psnr)), 2),
                                        round(float(np.min(psnr)), 2)]}


def side_by_side(runs: list[dict], base: str, other: str) -> dict:
  """``other``'s clips/s over ``base``'s for each pair of adjacent runs, and the median."""
  speeds = [(r["runner"], r["clips_per_second"]) for r in runs]
  ratios = [round(b / a, 3) if ra == base else round(a / b, 3)
            for (ra, a), (_, b) in zip(speeds, speeds[1:])]
  return {f"{other}_over_{base}": ratios, "median": float(np.median(ratios))}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="lrw")
  p.add_argument("--raw_dir", required=True)
  p.add_argument("--out_root", required=True)
  p.add_argument("--resolution", type=int, default=128)
  p.add_argument("--num_workers", type=int, default=2)
  p.add_argument("--runners", default="pool,beam")
  p.add_argument("--repeats", type=int, default=1,
                 help="Rounds of all runners, alternating, for a side-by-side ratio.")
  p.add_argument("--storage_examples", type=int, default=200)
  p.add_argument("--json", default=None)
  args = p.parse_args(argv)
  result = {"cpu": machine.cpu_model(), "isa": machine.cpu_isa(), "nproc": os.cpu_count(),
            "load_before": os.getloadavg(),
            "runs": []}
  runners = args.runners.split(",")
  for round_ in range(args.repeats):
    for runner in runners:
      run = run_build(args, runner)
      run.update(round=round_, load_after=os.getloadavg(),
                 clips_per_second=round(run["clips_used"] / run["wall_seconds"], 3))
      result["runs"].append(run)
      print(json.dumps(run), flush=True)
  if len(runners) == 2:
    result["ratio"] = side_by_side(result["runs"], *runners)
    print(json.dumps(result["ratio"]), flush=True)
  result["storage"] = storage_options(result["runs"][0]["out_dir"], args.storage_examples)
  print(json.dumps(result["storage"]), flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()

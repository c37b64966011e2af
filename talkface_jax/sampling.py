"""``--mode=sample``: K videos per input, written as files, through ``inference.Generator``.

Two sources of inputs:

* held-out clips of the eval split (``sample_heldout``, ``write_clip_videos``,
  ``write_sample_summaries``): each clip's first frame and its MFCC windows; per clip one
  mp4 per sample with the clip's audio, a side-by-side mp4 (ground truth | samples) and a
  contact sheet, under ``WORKDIR/samples/step_<N>/``;
* user files (``--face`` + ``--audio``, or ``--csv`` rows; ``sample_files``): any photo and
  any audio file, through ``Generator.generate`` and ``Generator.write``.

Files are written by process 0 only; generation runs on every device of every process.
"""

import csv
import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np
import tqdm
from absl import logging

import talkface_jax.errors as errors
import talkface_jax.inference as inference
import talkface_jax.input_pipeline as input_pipeline
import talkface_jax.media as media

# -------------------------------------------------------------------------------------------------
# Held-out clips.
# -------------------------------------------------------------------------------------------------


def sample_heldout(generator: inference.Generator, num_samples: int | None = None,
                   strata: list[str] | None = None) -> tuple[list[dict], list[np.ndarray]]:
  """(clips, videos): ``config.sample.num_clips`` clips of the eval split (of each stratum,
  e.g. seen / unseen speakers, with ``strata``: ``input_pipeline.load_clips``) and their K
  videos (uint8 [K, T, S, S, 3] each; seed ``config.sample.seed``; K defaults to
  ``config.sample.num_samples``)."""
  config = generator.config
  clips = input_pipeline.load_clips(config, config.data.eval_split, config.sample.num_clips,
                                    strata=strata)
  videos = generator.generate_clips(clips, num_samples or config.sample.num_samples,
                                    jax.random.key(config.sample.seed),
                                    batch_size=config.eval.batch_size)
  return clips, videos


def write_sample_summaries(generator: inference.Generator, writer, step: int) -> None:
  """Contact sheets (ground truth row, then K sample rows) of held-out clips to TensorBoard."""
  clips, videos = sample_heldout(generator)
  images = {}
  for clip, samples in zip(clips, videos):
    sheet = media.contact_sheet([clip["frames"], *samples], max_frames=16)
    images[f"samples/{clip['clip_id']}"] = sheet[None]
  writer.write_images(step, images)


def write_clip_videos(clips: list[dict], videos, out_dir: str, step: int) -> list[str]:
  """Writes, per clip, one mp4 per sample (the clip's audio muxed), a side-by-side mp4
  (ground truth | samples) and a contact-sheet PNG under ``out_dir/step_<step>``.

  Returns:
    The paths (written by process 0; the other processes return the same list).
  """
  paths = []
  for clip, samples in zip(clips, videos):
    stem = os.path.join(out_dir, f"step_{step}", clip["clip_id"].replace("/", "_"))
    audio = clip["audio"]
    clip_paths = [f"{stem}_sample{k}.mp4" for k in range(len(samples))]
    clip_paths += [f"{stem}_side_by_side.mp4", f"{stem}_contact_sheet.png"]
    paths += clip_paths
    if jax.process_index() != 0:
      continue
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    for path, sample in zip(clip_paths, samples):
      media.write_video(path, sample, audio=audio)
    media.write_video(clip_paths[-2], media.side_by_side([clip["frames"], *samples]),
                      audio=audio)
    media.write_png(clip_paths[-1], media.contact_sheet([clip["frames"], *samples]))
  return paths


# -------------------------------------------------------------------------------------------------
# User files: a face photo and an audio file, one or many (CSV).
# -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileRequest:
  """One input of file sampling: a face photo, an audio file and the output folder."""
  face: str
  audio: str
  out: str


def read_csv(path: str) -> list[FileRequest]:
  """Rows ``face,audio,out`` of a CSV file (an optional header row, '#' comments).

  Relative paths are taken relative to the CSV file's folder.

  Raises:
    UserError: the file cannot be read, or a row does not have three non-empty fields.
  """
  base = os.path.dirname(os.path.abspath(path))
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise errors.UserError(f"CSV {path}: cannot read it ({e})") from e
  requests = []
  for line, row in enumerate(rows, start=1):
    fields = [field.strip() for field in row]
    if not any(fields) or fields[0].startswith("#"):
      continue
    if line == 1 and [x.lower() for x in fields] == ["face", "audio", "out"]:
      continue
    if len(fields) != 3 or not all(fields):
      raise errors.UserError(f"CSV {path}, line {line}: expected 'face,audio,out', got {row}")
    face, audio, out = (os.path.normpath(os.path.join(base, os.path.expanduser(x)))
                        for x in fields)
    requests.append(FileRequest(face, audio, out))
  if not requests:
    raise errors.UserError(f"CSV {path}: no rows")
  return requests


@dataclasses.dataclass(frozen=True)
class SampleRequest:
  """What ``--mode=sample`` was asked for on the command line (all optional).

  Attributes:
    face: a face photo (with ``audio``).
    audio: an audio file (with ``face``).
    csv: a CSV of ``face,audio,out`` rows (instead of face and audio).
    out: output folder for face + audio; default ``WORKDIR/samples/<face>_<audio>``.
    num_samples: K; default ``config.sample.num_samples``.
    face_index: which face of photos with several (0: the largest).
  """
  face: str | None = None
  audio: str | None = None
  csv: str | None = None
  out: str | None = None
  num_samples: int | None = None
  face_index: int = 0

  def file_requests(self, workdir: str) -> list[FileRequest] | None:
    """The user-file inputs asked for, or None to sample held-out clips.

    Raises:
      UserError: an inconsistent combination of flags, a bad CSV, or an output path that
        is also an input.
    """
    if self.num_samples is not None and self.num_samples < 1:
      raise errors.UserError(f"--num_samples must be >= 1, got {self.num_samples}")
    if self.csv:
      if self.face or self.audio or self.out:
        raise errors.UserError("--csv takes face, audio and out from its rows: drop --face, "
                               "--audio and --out")
      requests = read_csv(self.csv)
    elif bool(self.face) != bool(self.audio):
      raise errors.UserError("--face and --audio go together (or use --csv)")
    elif not self.face:
      if self.out:
        raise errors.UserError("--out needs --face and --audio (held-out clips go to "
                               "WORKDIR/samples)")
      return None
    else:
      stem = lambda p: os.path.splitext(os.path.basename(p))[0]
      out = self.out or os.path.join(workdir, "samples",
                                     f"{stem(self.face)}_{stem(self.audio)}")
      requests = [FileRequest(self.face, self.audio, out)]
    for request in requests:
      out = os.path.abspath(request.out)
      if out in (os.path.abspath(request.face), os.path.abspath(request.audio)):
        raise errors.UserError(f"output {request.out}: is also an input file")
    return requests


@dataclasses.dataclass(frozen=True)
class BatchReport:
  """What ``sample_files`` did: written paths per input, and the inputs it skipped."""
  written: dict[str, list[str]]  # out folder -> paths.
  failed: dict[str, str]  # out folder -> reason.
  compilations: int  # Traces of the chunk function: 1 for any number of inputs.


def sample_files(generator: inference.Generator, requests: list[FileRequest],
                 num_samples: int, seed: int = 0, face_index: int = 0) -> BatchReport:
  """Samples every request with one compiled function; a bad input is skipped and reported.

  Every input uses the same seed: a (face, audio) pair gives the same videos wherever it
  appears in a CSV.

  Returns:
    The report. With a single request its error is raised instead.
  """
  written, failed = {}, {}
  show = jax.process_index() == 0
  for i, request in enumerate(tqdm.tqdm(requests, desc="sampling", unit="input",
                                        disable=len(requests) < 2 or not show)):
    logging.info("Input %d / %d: %s + %s -> %s", i + 1, len(requests), request.face,
                 request.audio, request.out)
    try:
      speech = generator.prepare_speech(request.audio)
      info = {"face": os.path.abspath(request.face), "audio": os.path.abspath(request.audio),
              "seed": seed, "face_index": face_index}
      started = time.perf_counter()
      written[request.out] = generator.generate_to_files(
          request.face, speech, request.out, num_samples, seed, info,
          progress=show and speech.num_frames > 10 * generator.chunk_frames,
          face_index=face_index)
      seconds = time.perf_counter() - started
      logging.info("%d frames x %d samples generated and written in %.1f s, %.2fx real time "
                   "(the first input includes compilation)", speech.num_frames, num_samples,
                   seconds, speech.num_frames / inference.FPS / seconds)
    except errors.UserError as e:
      if len(requests) == 1:
        raise
      logging.error("Skipped input %d (%s): %s", i + 1, request.out, e)
      failed[request.out] = str(e)
  return BatchReport(written, failed, generator.num_traces)


def run(generator: inference.Generator, workdir: str, request: SampleRequest,
        requests: list[FileRequest] | None) -> str:
  """``--mode=sample``: the user files ``requests`` (``request.file_requests``, checked before
  the checkpoint is read) if any, else held-out clips.

  Returns:
    A one-paragraph summary for the console.

  Raises:
    UserError: (with several inputs) some of them failed; the others were written.
  """
  config = generator.config
  num_samples = request.num_samples or config.sample.num_samples
  if requests:
    report = sample_files(generator, requests, num_samples, config.sample.seed,
                          request.face_index)
    lines = [f"Sampled {len(report.written)} of {len(requests)} inputs, K = {num_samples}, "
             f"step {generator.step}:"]
    lines += [f"  {out}" for out in report.written]
    if report.failed:
      lines += [f"  skipped {out}: {reason}" for out, reason in report.failed.items()]
      print("\n".join(lines), flush=True)
      raise errors.UserError(f"{len(report.failed)} of {len(requests)} inputs failed (the "
                             "others were written)")
    return "\n".join(lines)
  out_dir = os.path.join(workdir, "samples")
  clips, videos = sample_heldout(generator, num_samples)
  paths = write_clip_videos(clips, videos, out_dir, generator.step)
  return (f"Sampled {len(clips)} held-out clips, K = {num_samples}, step {generator.step}: "
          f"{len(paths)} files under {os.path.join(out_dir, f'step_{generator.step}')}")

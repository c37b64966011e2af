"""A trained model on real photos and real-voice recordings it never saw (issue 10's last target).

For every (photo, recording) pair of ``benchmarks/real_inputs.json`` (real people who are not
in the training corpus, people reading English), the workdir's model generates K videos
through the Python API (``talkface_jax.load(workdir).generate``, as ``--mode=sample`` does),
and this script measures on them, frame 0 (the input photo, aligned) excluded:

* lip sync without a ground-truth video: Pearson r between the mouth opening of each
  generated frame and the recording's loudness in that frame (RMS of its 640 samples,
  ``metrics.rms_envelope``), at the best lag within +-``max_lag`` frames
  (``metrics.lagged_pearson_r``), averaged over the K samples. Beside it, the chance level:
  the same r of those openings against the other recordings' envelopes (``chance_r``; the
  best of 2 * max_lag + 1 lags is above 0 even for unrelated curves). The opening is the
  evaluation's (``data_prep.face.mouth_opening`` of Dlib landmarks fitted on the template
  box, ``landmarks_on_aligned``), on frames upscaled to ``landmark_side`` px (bicubic): at
  64 px the inner lip gap is a pixel or two and the fitted points move in whole-pixel steps;
* mouth movement: the standard deviation over time of that opening (inter-ocular units),
  mean over K; a mouth that stays still has r undefined (reported as null) and movement 0;
* identity: Dlib face-descriptor distance (``data_prep.face.face_descriptors``) between the
  input photo (its crop at full resolution) and ``identity_frames`` evenly spaced generated
  frames of each sample; ``metrics.identity_summary`` gives the median over all frames, the
  worst pair's median, the fraction under Dlib's 0.6 same-person threshold and of frames with
  a face. The same distance for the aligned frame 0 (the model's input at its resolution) is
  the floor a perfect model would reach.

Targets (issue 10): r >= 0.45 (mean over the pairs) and median identity distance <= 0.45.
Prints one table and writes a JSON (default ``WORKDIR/real_test_<step>.json``); ``--videos``
also writes each pair's K videos with their audio (``Generator.write``).

``--voice`` changes every recording before the model hears it (``transform_voice``), to ask
which property of real voices a model misses: ``pitch:S`` shifts pitch and formants by S
semitones (``librosa.effects.pitch_shift``: a smaller or larger vocal tract and voice; its
phase vocoder also smears the sound: the MFCC of a 0.2-semitone shift differ from the
original's about as much as with white noise 20 dB under the speech, BENCHMARKS.md),
``speed:S`` plays the recording 2^(S/12) times as fast (polyphase resampling, no phase
vocoder): pitch and formants S semitones up and the speech as much faster, nothing smeared,
``tempo:R`` speaks R times as fast (``librosa.effects.time_stretch``, pitch kept),
``gate:D`` zeroes the 10 ms frames more than D dB below the loudest (the corpus's digital
silence between words), ``floor:D`` adds pink noise D dB below the speech (a microphone's
noise floor). The lip sync is then measured against the changed recording's envelope, and
the JSON goes to ``real_test_<step>_<voice>.json``.

  python -m benchmarks.real_test --workdir=runs/synthetic --num_samples=4
  python -m benchmarks.real_test --workdir=runs/synthetic --num_samples=4 --voice=speed:-3
"""

import argparse
import fractions
import math
import os
import sys
import time

# TensorFlow (imported by talkface_jax for tf.data) says nothing at start-up, as in
# run_experiment.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# pylint: disable=g-import-not-at-top,wrong-import-position
import librosa
import numpy as np
import scipy.signal
import tqdm

from benchmarks import machine
from benchmarks import real_inputs
from data_prep import audio
from data_prep import audio_augment
from data_prep import face
from data_prep import fileio
import talkface_jax
from talkface_jax import errors
from talkface_jax import evaluation
from talkface_jax import inference
from talkface_jax import metrics

TARGET_R = 0.45
TARGET_DISTANCE = 0.45
LANDMARK_SIDE = face.MOUTH_LANDMARK_SIDE


def mouth_openings(videos: np.ndarray, side: int) -> np.ndarray:
  """Mouth opening per generated frame (frame 0 excluded): videos [K, T, S, S, 3] -> [K, T-1]."""
  num_samples, num_frames = videos.shape[:2]
  frames = videos[:, 1:].reshape(-1, *videos.shape[2:])
  return face.upscaled_mouth_opening(frames, side).reshape(num_samples, num_frames - 1)


def measure_pair(videos: np.ndarray, samples: np.ndarray, photo_descriptor: np.ndarray,
                 max_lag: int = 2, identity_frames: int = 8,
                 landmark_side: int = LANDMARK_SIDE) -> dict:
  """Lip sync, movement and identity of K videos of one (photo, recording) pair.

  Args:
    videos: uint8 [K, T, S, S, 3], frame 0 the aligned photo.
    samples: float32 [T * 640] the recording as the model heard it (``Speech.samples``).
    photo_descriptor: float32 [128] Dlib descriptor of the input photo.
    max_lag: lags tried by ``metrics.lagged_pearson_r``.
    identity_frames: generated frames per sample scored for identity.
    landmark_side: frames are upscaled to this side before the landmarks are fitted.

  Returns:
    'frames' (T), 'r_mean' (mean over the samples with a defined r; nan if none), 'r' and
    'lag' per sample, 'r_defined' (fraction of samples with a defined r), 'movement' (mean
    over K of the opening's std over time) and 'movement_per_sample', 'opening' float32
    [K, T-1], 'identity_distance' float [K, n] (nan where no face was found),
    'frame0_distance' (photo vs. frame 0).
  """
  num_samples, num_frames = videos.shape[:2]
  envelope = metrics.rms_envelope(samples, inference.SAMPLES_PER_FRAME)
  if len(envelope) != num_frames:
    raise ValueError(f"{num_frames} frames but {len(envelope)} frames of audio")
  opening = mouth_openings(videos, landmark_side)
  r, lag = metrics.lagged_pearson_r(opening, envelope[1:], max_lag)
  movement = np.asarray(opening, np.float64).std(axis=1)
  times = evaluation.identity_frame_indices(num_frames, identity_frames)
  descriptors, _ = face.face_descriptors(np.concatenate(
      [videos[0, :1], videos[:, times].reshape(-1, *videos.shape[2:])]))
  distance = face.descriptor_distance(descriptors, photo_descriptor)
  defined = np.isfinite(r)
  return {
      "frames": int(num_frames),
      "r_mean": float(r[defined].mean()) if defined.any() else math.nan,
      "r": r.tolist(), "lag": lag.tolist(), "r_defined": float(defined.mean()),
      "movement": float(movement.mean()), "movement_per_sample": movement.tolist(),
      "opening": opening, "frame0_distance": float(distance[0]),
      "identity_distance": distance[1:].reshape(num_samples, len(times)),
  }


def chance_r(opening: np.ndarray, other_envelopes: list[np.ndarray], max_lag: int) -> float:
  """The lip-sync r an opening reaches against recordings it was not made from.

  The same measure (best lag within +-``max_lag``) between the K openings [K, T-1] of one
  pair and the envelopes (frame 0 dropped) of the other recordings, each cropped to the
  shorter of the two: what the best-lag r gives by chance for this amount of mouth motion.

  Returns:
    The mean over samples and recordings of the defined r; nan if none is defined.
  """
  values = []
  for envelope in other_envelopes:
    length = min(opening.shape[1], len(envelope))
    r, _ = metrics.lagged_pearson_r(opening[:, :length], envelope[:length], max_lag)
    values.extend(r[np.isfinite(r)])
  return float(np.mean(values)) if values else math.nan


def summarize(pairs: list[dict]) -> dict:
  """Figures over all pairs and the targets' verdicts."""
  r = [p["r_mean"] for p in pairs if math.isfinite(p["r_mean"])]
  identity = metrics.identity_summary([p["identity_distance"] for p in pairs],
                                      face.SAME_PERSON_DISTANCE)
  frame0 = metrics.identity_summary([np.array(p["frame0_distance"]) for p in pairs],
                                    face.SAME_PERSON_DISTANCE)
  chance = [p["r_chance"] for p in pairs if math.isfinite(p.get("r_chance", math.nan))]
  summary = {
      "r_mean": float(np.mean(r)) if r else math.nan,
      "r_chance": float(np.mean(chance)) if chance else math.nan,
      "r_worst_pair": float(min(r)) if r else math.nan,
      "r_defined_pairs": len(r) / len(pairs),
      "movement": float(np.mean([p["movement"] for p in pairs])),
      **{f"identity_{k}": v for k, v in identity.items()},
      "frame0_distance_median": frame0["distance_median"],
  }
  # An undefined r (a still mouth) fails; so does a median over frames without faces (inf).
  summary["r_target_met"] = bool(len(r) == len(pairs) and summary["r_mean"] >= TARGET_R)
  summary["identity_target_met"] = bool(summary["identity_distance_median"] <= TARGET_DISTANCE)
  return summary


VOICE_TRANSFORMS = ("pitch", "speed", "tempo", "gate", "floor")


def parse_voice(spec: str) -> tuple[str, float]:
  """``--voice``'s (transform, amount).

  Raises:
    UserError: ``spec`` is not ``name:number`` with a name of ``VOICE_TRANSFORMS``.
  """
  name, _, value = spec.partition(":")
  try:
    amount = float(value)
  except ValueError:
    amount = math.nan
  if name not in VOICE_TRANSFORMS or not math.isfinite(amount) or (
      name == "tempo" and amount <= 0):
    raise errors.UserError(f"--voice={spec!r}: expected one of {', '.join(VOICE_TRANSFORMS)} "
                           "and a number, e.g. pitch:+3, speed:-3, tempo:0.8, gate:35, floor:45")
  return name, amount


def transform_voice(samples: np.ndarray, spec: str, seed: int = 0) -> np.ndarray:
  """``samples`` (float [S] at 16 kHz) changed as ``spec`` says (see the module docstring);
  a UserError for a bad ``spec`` (``parse_voice``)."""
  name, amount = parse_voice(spec)
  x = np.asarray(samples, np.float32)
  if name == "pitch":
    return librosa.effects.pitch_shift(x, sr=inference.SAMPLE_RATE, n_steps=amount)
  if name == "speed":  # Every frequency times f, the duration over f.
    ratio = fractions.Fraction(2 ** (amount / 12)).limit_denominator(200)
    return scipy.signal.resample_poly(x, ratio.denominator, ratio.numerator).astype(np.float32)
  if name == "tempo":
    return librosa.effects.time_stretch(x, rate=amount)
  frame = inference.SAMPLE_RATE // 100
  if name == "gate":
    whole = len(x) // frame * frame
    level = 10 * np.log10(metrics.rms_envelope(x[:whole], frame) ** 2 + 1e-12)
    y = x.copy()
    y[:whole] *= np.repeat(level >= level.max() - amount, frame)
    return y
  pink = audio_augment.pink_noise(np.random.default_rng(seed).standard_normal(len(x)))
  power = float(np.mean(x.astype(np.float64) ** 2))
  return audio_augment.add_noise(x, pink, amount, power).astype(np.float32)


def run(generator: inference.Generator, photos: dict[str, np.ndarray], recordings: dict,
        num_samples: int = 4, seed: int = 0, max_lag: int = 2, identity_frames: int = 8,
        landmark_side: int = LANDMARK_SIDE, videos_dir: str | None = None) -> dict:
  """Generates and measures every (photo, recording) pair.

  Args:
    generator: the model (``talkface_jax.load``).
    photos: photo id -> uint8 [h, w, 3] image (detected and aligned by ``generate``).
    recordings: recording id -> audio path or (samples, rate).
    num_samples: K per pair; every pair draws with ``seed``.
    videos_dir: if set, each pair's videos go to ``videos_dir/<photo>__<recording>/``.

  Returns:
    'pairs' (per pair: 'photo', 'recording', ``measure_pair``'s figures and 'r_chance',
    ``chance_r`` against the other recordings), 'summary' (``summarize``) and the settings.
  """
  descriptors, found = face.face_descriptors(list(photos.values()))
  missing = [name for name, ok in zip(photos, found) if not ok]
  if missing:
    raise errors.UserError(f"photos {missing}: Dlib finds no face for the descriptor")
  photo_descriptor = dict(zip(photos, descriptors))
  speech = {name: generator.prepare_speech(audio) for name, audio in recordings.items()}
  pairs = []
  for photo_id, recording_id in tqdm.tqdm(
      [(p, r) for p in photos for r in recordings], desc="pairs", unit="pair", leave=False):
    videos = generator.generate(photos[photo_id], speech[recording_id], num_samples, seed)
    if videos_dir:
      generator.write(os.path.join(videos_dir, f"{photo_id}__{recording_id}"), videos,
                      speech[recording_id], {"photo": photo_id, "recording": recording_id})
    pairs.append({"photo": photo_id, "recording": recording_id, **measure_pair(
        videos, speech[recording_id].samples, photo_descriptor[photo_id], max_lag,
        identity_frames, landmark_side)})
  envelopes = {name: metrics.rms_envelope(s.samples, inference.SAMPLES_PER_FRAME)[1:]
               for name, s in speech.items()}
  for pair in pairs:
    pair["r_chance"] = chance_r(pair["opening"], [e for name, e in envelopes.items()
                                                  if name != pair["recording"]], max_lag)
  return {"step": generator.step, "num_samples": num_samples, "seed": seed, "max_lag": max_lag,
          "identity_frames": identity_frames, "landmark_side": landmark_side,
          "targets": {"r_mean": TARGET_R, "identity_distance_median": TARGET_DISTANCE},
          "pairs": pairs, "summary": summarize(pairs)}


def format_table(results: dict) -> str:
  """One table: a row per pair, the overall row and the targets."""
  fmt = lambda v, w=8, d=3: f"{v:>{w}.{d}f}" if v is not None and math.isfinite(v) else (
      f"{'-':>{w}}")
  lines = [f"Real photos x real voices: step {results['step']}, K = {results['num_samples']}, "
           f"seed {results['seed']}; mouth opening on frames upscaled to "
           f"{results['landmark_side']} px; r at the best lag within +-{results['max_lag']} "
           f"frames; identity on {results['identity_frames']} frames per sample"
           + (f"; every recording changed: --voice={results['voice']}"
              if results.get("voice") else ""),
           f"{'photo':<20}{'recording':<22}{'frames':>7}{'r':>8}{'chance':>8}  {'lags':<12}"
           f"{'move':>7}{'id dist':>9}{'<0.6':>7}{'frame0':>8}"]
  for p in results["pairs"]:
    identity = metrics.identity_summary([p["identity_distance"]], face.SAME_PERSON_DISTANCE)
    lags = ",".join(str(l) for l in p["lag"])
    lines.append(f"{p['photo']:<20.20}{p['recording']:<22.22}{p['frames']:>7d}"
                 f"{fmt(p['r_mean'])}{fmt(p.get('r_chance', math.nan))}  {lags:<12.12}"
                 f"{fmt(p['movement'], 7)}"
                 f"{fmt(identity['distance_median'], 9)}{fmt(identity['under_threshold'], 7, 2)}"
                 f"{fmt(p['frame0_distance'])}")
  s = results["summary"]
  lines.append(f"{'all pairs':<49}{fmt(s['r_mean'])}{fmt(s['r_chance'])}  {'':<12}"
               f"{fmt(s['movement'], 7)}"
               f"{fmt(s['identity_distance_median'], 9)}{fmt(s['identity_under_threshold'], 7, 2)}"
               f"{fmt(s['frame0_distance_median'])}")
  verdict = lambda ok: "met" if ok else "NOT met"
  lines.append(f"targets: r >= {TARGET_R} (mean over pairs, every pair defined): "
               f"{fmt(s['r_mean'], 0)} {verdict(s['r_target_met'])}; identity distance "
               f"median <= {TARGET_DISTANCE}: {fmt(s['identity_distance_median'], 0)} "
               f"{verdict(s['identity_target_met'])} (worst pair "
               f"{fmt(s['identity_distance_worst_clip'], 0)}, faces found "
               f"{fmt(s['identity_face_found'], 0, 2)})")
  lines.append("chance: the same r against the other recordings' envelopes; frame0: the "
               "distance of the aligned input frame (the floor)")
  return "\n".join(lines)


def to_json(results: dict) -> dict:
  """``results`` with arrays as lists and non-finite numbers as null (``fileio.json_ready``),
  the openings rounded to 5 decimals."""
  pairs = [{**p, "opening": np.round(np.asarray(p["opening"], np.float64), 5)}
           for p in results["pairs"]]
  return fileio.json_ready({**results, "pairs": pairs})


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="a trained workdir (read only)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint (default: newest)")
  parser.add_argument("--num_samples", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_lag", type=int, default=2)
  parser.add_argument("--identity_frames", type=int, default=8)
  parser.add_argument("--landmark_side", type=int, default=LANDMARK_SIDE)
  parser.add_argument("--out", default=None,
                      help="JSON path (default WORKDIR/real_test_<step>.json)")
  parser.add_argument("--videos", default=None, help="also write the videos under this folder")
  parser.add_argument("--voice", default=None,
                      help="change every recording first: pitch:S, speed:S, tempo:R, gate:D or "
                      "floor:D (module docstring)")
  parser.add_argument("--cache_dir", default=None,
                      help=f"fetched inputs (default {real_inputs.default_cache()})")
  args = parser.parse_args(argv)
  start = time.time()
  try:
    generator = talkface_jax.load(args.workdir, args.step)  # A bad workdir fails first.
    if args.voice:
      parse_voice(args.voice)  # A bad spec fails before anything is fetched.
    photos, recordings = real_inputs.fetch(args.cache_dir)
    if args.voice:
      recordings = {name: (transform_voice(audio.load_audio(path, dtype=np.float32), args.voice),
                           inference.SAMPLE_RATE) for name, path in recordings.items()}
    results = run(generator, photos, recordings, args.num_samples, args.seed, args.max_lag,
                  args.identity_frames, args.landmark_side, args.videos)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  photo_table, recording_table = real_inputs.load_table()
  results = {"workdir": os.path.abspath(args.workdir), "voice": args.voice, **results,
             "inputs": {e.identity: e.source for e in photo_table + recording_table}}
  suffix = f"_{args.voice.replace(':', '')}" if args.voice else ""
  out = args.out or os.path.join(args.workdir, f"real_test_{results['step']}{suffix}.json")
  fileio.write_json(out, to_json(results), indent=1)
  print(format_table(results))
  print(f"{len(results['pairs'])} pairs in {time.time() - start:.0f} s ({machine.describe()}, "
        f"load {machine.load()}); written to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

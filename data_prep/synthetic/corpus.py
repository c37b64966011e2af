"""Writing a synthetic corpus: clip plans, the files of a clip, and the corpus on disk.
Imports no JAX.
"""

import io
import json
import multiprocessing
import os
import subprocess
import time
import wave
import zipfile

import imageio_ffmpeg
import numpy as np
from scipy import signal

from data_prep.synthetic.motion import CLIP_SECONDS, FPS, NUM_FRAMES, blink_curve, mouth_curve
from data_prep.synthetic.motion import sway_curves
import data_prep.synthetic.faces as face_photos
from data_prep.synthetic.render import DEFAULT_FRAME_SIZE, FaceTemplate, Look
from data_prep.synthetic.render import build_face_template, render_clip
from data_prep.synthetic.speech import ADVERBS, COLOURS, COMMANDS, DIGITS, PREPOSITIONS
from data_prep.synthetic.speech import ACCENT_VOICES, GRAMMAR, VOICES, clip_name
from data_prep.synthetic.speech import random_sentence
from data_prep.synthetic.speech import shift_events, spoken_text, synthesize_speech

VERSION = "1.1.0"  # 1.1: longer blinks, 0.3-0.6 Hz.
SAMPLE_RATE = 50000  # GRID's distribution rate.
ALIGN_UNITS_PER_SECOND = 25000  # GRID .align units: 1000 per 25 fps frame.
# LRW: 29-frame (1.16 s) clips centred on one word, 256x256, AAC audio at 16 kHz in the mp4.
LRW_NUM_FRAMES = 29
LRW_FRAME_SIZE = (256, 256)
LRW_SAMPLE_RATE = 16000
LRW_WORDS = tuple(w for slot in (COMMANDS, COLOURS, PREPOSITIONS, DIGITS, ADVERBS) for w in slot)

# --------------------------------------------------------------------------- writers


def _write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
  with wave.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    w.writeframes(samples.astype("<i2").tobytes())


def _write_npz(path: str, arrays: dict) -> None:
  """np.savez-compatible zip with fixed timestamps (np.savez stamps the wall clock)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
    for key in sorted(arrays):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
      info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, buf.getvalue())


def _write_video(path: str, frames: np.ndarray, fps: int = FPS) -> None:
  """MPEG-1 video in an .mpg (program stream) container, no audio, like GRID's."""
  import imageio.v2 as imageio  # pylint: disable=g-import-not-at-top
  writer = imageio.get_writer(
      path, format="FFMPEG", mode="I", fps=fps, codec="mpeg1video", quality=None,
      pixelformat="yuv420p", macro_block_size=8, ffmpeg_log_level="error",
      output_params=["-qscale:v", "3", "-bitexact", "-threads", "1", "-an"])
  try:
    for frame in frames:
      writer.append_data(frame)
  finally:
    writer.close()


def _align_text(words: list[str], starts: list[float], ends: list[float]) -> str:
  """GRID .align: ``start end word`` lines in 1/25000 s, ``sil`` around the sentence."""
  total = int(round(CLIP_SECONDS * ALIGN_UNITS_PER_SECOND))
  units = lambda t: int(round(t * ALIGN_UNITS_PER_SECOND))
  lines, cursor = [], 0
  first = units(starts[0])
  if first > 0:
    lines.append(f"0 {first} sil")
    cursor = first
  for w, s, e in zip(words, starts, ends):
    s_u, e_u = max(units(s), cursor), max(units(e), cursor)
    if s_u > cursor:  # A pause between words: GRID writes it as "sp".
      lines.append(f"{cursor} {s_u} sp")
    lines.append(f"{s_u} {e_u} {w}")
    cursor = e_u
  if cursor < total:
    lines.append(f"{cursor} {total} sil")
  return "\n".join(lines) + "\n"



# --------------------------------------------------------------------------- corpus


def speaker_params(seed: int, speaker: int) -> dict:
  """Per-speaker voice and motion statistics (speaker counts from 1)."""
  rng = np.random.default_rng([seed, speaker, 0])
  return dict(
      voice=VOICES[(speaker - 1 + seed) % len(VOICES)],
      rate=int(rng.integers(145, 186)),
      pitch=int(rng.integers(30, 71)),
      pitch_range=int(rng.integers(35, 76)),
      articulation=round(float(rng.uniform(0.8, 1.0)), 3),
      sway_px=round(float(rng.uniform(1.0, 3.0)), 3),
      sway_deg=round(float(rng.uniform(0.5, 2.5)), 3),
      sway_smooth_frames=round(float(rng.uniform(6.0, 12.0)), 3),
      blink_rate_hz=round(float(rng.uniform(0.3, 0.6)), 3))


# Held-out speakers of the photo corpus get identities whose nearest other identity of the
# table is at least this far (Dlib's same-person threshold), so that an identity score on
# them cannot be passed by rendering a training face.
_DISTINCT = 0.6


def default_photo_cache() -> str:
  """Where fetched face photos are kept: $XDG_CACHE_HOME (or ~/.cache)/talkface_jax/faces."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "talkface_jax", "faces")


def photo_speaker_params(seed: int, num_speakers: int, num_heldout: int,
                         photos: list[face_photos.FacePhoto] | None = None) -> dict:
  """Per-speaker identity, voice, motion and look for the many-identity corpus.

  Speaker = one identity (photo) + one espeak voice, never shared with another speaker, so
  "unseen speaker" means unseen face and unseen voice. The last ``num_heldout`` speakers are
  the held-out ones (``heldout: True``); they get identities whose nearest other identity is
  at least Dlib's 0.6 away where the table has enough of them.

  Returns:
    {"s1": {...}, ...}: identity, name, photo (package, version, file), licence, voice,
    rate, pitch, pitch_range, articulation, sway_px/deg, sway_smooth_frames, blink_rate_hz,
    look (face_fraction, centre, mirror, gain, gamma, side_light), heldout.
  """
  photos = face_photos.load_table()[0] if photos is None else photos
  if not 0 < num_speakers <= len(photos):
    raise ValueError(f"num_speakers={num_speakers}: the photo table has {len(photos)} "
                     "identities (one speaker per identity)")
  if not 0 <= num_heldout < num_speakers:
    raise ValueError(f"num_heldout={num_heldout}: between 0 and num_speakers - 1")
  rng = np.random.default_rng([seed, 7])
  order = [int(i) for i in rng.permutation(len(photos))]
  distinct = [i for i in order if photos[i].nearest_other["distance"] >= _DISTINCT]
  held = (distinct + [i for i in order if i not in distinct])[:num_heldout]
  train = [i for i in order if i not in held][:num_speakers - num_heldout]
  # Voices match the photo's sex (espeak's female variants f1, f4 for women and girls):
  # one shuffled pool per sex; held-out speakers take the first voices of their pool, the
  # training speakers the others, so no training speaker speaks with a held-out voice.
  pools = {sex: [v for v in (ACCENT_VOICES[int(i)]
                             for i in rng.permutation(len(ACCENT_VOICES)))
                 if v.endswith(("+f1", "+f4")) == (sex == "f")] for sex in ("f", "m")}
  num_train = num_speakers - num_heldout
  order_spk = held + train  # Held-out speakers draw first.
  voice_of = {}
  for index in order_spk:
    pool = pools[photos[index].notes["sex"]]
    if not pool:
      raise ValueError(f"more {photos[index].notes['sex']} speakers than voices")
    voice_of[index] = pool.pop(0)
  table = {}
  for spk, index in enumerate(train + held, start=1):
    heldout = spk > num_train
    voice = voice_of[index]
    p = photos[index]
    r = np.random.default_rng([seed, spk, 0])
    # espeak pitch 0..100: women and children higher.
    low, high = (50, 80) if p.notes["sex"] == "f" else (20, 55)
    if p.notes["age"] == "child":
      low, high = low + 10, high + 15
    table[f"s{spk}"] = dict(
        identity=p.identity, name=p.name, photo=p.source, licence=p.licence,
        voice=voice,
        rate=int(r.integers(130, 191)),
        pitch=int(r.integers(low, high + 1)),
        pitch_range=int(r.integers(25, 86)),
        articulation=round(float(r.uniform(0.75, 1.0)), 3),
        sway_px=round(float(r.uniform(0.5, 4.0)), 3),
        sway_deg=round(float(r.uniform(0.3, 3.0)), 3),
        sway_smooth_frames=round(float(r.uniform(5.0, 14.0)), 3),
        blink_rate_hz=round(float(r.uniform(0.15, 0.6)), 3),
        look=dict(face_fraction=round(float(r.uniform(0.36, 0.52)), 3),
                  centre=[round(float(r.uniform(0.42, 0.58)), 3),
                          round(float(r.uniform(0.45, 0.55)), 3)],
                  mirror=bool(r.integers(2)),
                  gain=[round(float(v), 3) for v in r.uniform(0.88, 1.12, 3)],
                  gamma=round(float(r.uniform(0.85, 1.15)), 3),
                  side_light=round(float(r.uniform(-0.25, 0.25)), 3)),
        heldout=heldout)
  return table


def _look(params: dict) -> Look:
  lk = params["look"]
  return Look(face_fraction=lk["face_fraction"], centre=tuple(lk["centre"]),
              mirror=lk["mirror"], gain=tuple(lk["gain"]), gamma=lk["gamma"],
              side_light=lk["side_light"])


def _plan(seed: int, num_speakers: int, clips_per_speaker: int,
          speakers: dict | None = None) -> list[dict]:
  """Deterministic list of clip jobs: unique sentences per speaker.

  ``speakers``: per-speaker parameters (:func:`photo_speaker_params`); None: the astronaut
  corpus's :func:`speaker_params`.
  """
  if clips_per_speaker > int(np.prod([len(s) for s in GRAMMAR])):
    raise ValueError("more clips per speaker than GRID sentences")
  jobs = []
  for spk in range(1, num_speakers + 1):
    rng = np.random.default_rng([seed, spk, 1])
    params = speaker_params(seed, spk) if speakers is None else speakers[f"s{spk}"]
    seen = set()
    for i in range(clips_per_speaker):
      while True:
        words = random_sentence(rng)
        name = clip_name(words)
        if name not in seen:
          seen.add(name)
          break
      jobs.append(dict(speaker=f"s{spk}", speaker_index=spk, clip_index=i, name=name,
                       words=words, params=params, seed=seed))
  return jobs


def _clip_paths(root: str, speaker: str, name: str) -> dict:
  return dict(
      wav=os.path.join(root, speaker, name + ".wav"),
      align=os.path.join(root, speaker, "align", name + ".align"),
      mpg=os.path.join(root, speaker, name + ".mpg"),
      npz=os.path.join(root, "ground_truth", speaker, name + ".npz"))


def _clip_complete(root: str, job: dict) -> bool:
  return all(os.path.exists(p) for p in _clip_paths(root, job["speaker"], job["name"]).values())


def make_clip(job: dict, template: FaceTemplate) -> dict:
  """Everything of one clip in memory (no files): audio, align text, frames, truth.

  GRID jobs (:func:`_plan`) place a sentence at a random lead in 3 s; LRW jobs
  (:func:`_plan_lrw`) centre one word in 29 frames.
  """
  p = job["params"]
  lrw = job.get("layout") == "lrw"
  num_frames = LRW_NUM_FRAMES if lrw else NUM_FRAMES
  clip_seconds = num_frames / FPS
  sample_rate = LRW_SAMPLE_RATE if lrw else SAMPLE_RATE
  rng = np.random.default_rng([job["seed"], job["speaker_index"], 2, job["clip_index"]])
  words = job["words"]
  text = spoken_text(words)
  rate = p["rate"] + int(rng.integers(-8, 9))
  pitch = p["pitch"] + int(rng.integers(-4, 5))
  lead = float(rng.uniform(0.3, 0.8))
  while True:
    samples, sr, events = synthesize_speech(text, p["voice"], rate, pitch, p["pitch_range"])
    speech = [e for e in events if e.word_index >= 0]
    t_first, t_last = speech[0].start, speech[-1].end
    if t_last - t_first <= clip_seconds - 0.4:
      break
    rate = int(rate * 1.15)  # Too long for the clip: speak faster.
  if lrw:  # LRW clips are centred on their word.
    lead = (clip_seconds - (t_last - t_first)) / 2
  lead = min(lead, clip_seconds - 0.2 - (t_last - t_first))
  offset = lead - t_first

  # Audio: resample espeak's 22050 Hz to the layout's rate, place at `offset` in the clip.
  g = np.gcd(sample_rate, sr)
  audio = signal.resample_poly(samples.astype(np.float64), sample_rate // g, sr // g)
  total = int(round(clip_seconds * sample_rate))
  out = np.zeros(total, np.float64)
  start = int(round(offset * sample_rate))
  a0, b0 = max(0, -start), min(len(audio), total - start)
  out[start + a0:start + b0] = audio[a0:b0]
  peak = np.abs(out).max()
  out *= 0.6 / max(peak, 1e-6)
  out += rng.normal(0.0, 3e-4, total)  # Room noise floor: no digital silence (log energy).
  pcm = np.clip(np.round(out * 32767), -32768, 32767).astype(np.int16)

  events = shift_events(events, offset, clip_seconds)
  word_starts, word_ends = [], []
  for w in range(len(words)):
    ph = [e for e in events if e.word_index == w]
    word_starts.append(ph[0].start)
    word_ends.append(ph[-1].end)

  mouth = mouth_curve(events, num_frames, FPS) * np.float32(p["articulation"])
  eye = blink_curve(rng, num_frames, FPS, p["blink_rate_hz"])
  dx, dy, angle = sway_curves(rng, num_frames, p["sway_px"], p["sway_deg"],
                              p["sway_smooth_frames"])
  frames = render_clip(template, mouth, eye, dx, dy, angle)
  truth = dict(
      mouth_open=mouth.astype(np.float32), eye_open=eye, head_dx=dx, head_dy=dy,
      head_angle=angle, sentence=np.array(" ".join(words)),
      words=np.array(words), word_start=np.array(word_starts, np.float32),
      word_end=np.array(word_ends, np.float32),
      phonemes=np.array([e.phoneme for e in events]),
      phoneme_start=np.array([e.start for e in events], np.float32),
      phoneme_end=np.array([e.end for e in events], np.float32),
      phoneme_word=np.array([e.word_index for e in events], np.int32),
      voice=np.array(p["voice"]), rate=np.int32(rate), pitch=np.int32(pitch))
  align = None if lrw else _align_text(words, word_starts, word_ends)
  return dict(pcm=pcm, align=align, frames=frames, truth=truth,
              word_seconds=float(word_ends[-1] - word_starts[0]))


def _write_clip(root: str, job: dict, template: FaceTemplate) -> str:
  """Makes one clip and writes its four files through temp files + rename."""
  clip = make_clip(job, template)
  paths = _clip_paths(root, job["speaker"], job["name"])
  tmp_dir = os.path.join(root, ".tmp")
  tag = f"{job['speaker']}_{job['name']}_{os.getpid()}"
  tmp = {k: os.path.join(tmp_dir, f"{tag}.{k}") for k in paths}
  tmp["mpg"] = os.path.join(tmp_dir, f"{tag}.mpg")  # ffmpeg picks the muxer by suffix.
  for path in list(paths.values()) + [tmp_dir]:
    os.makedirs(os.path.dirname(path) if path != tmp_dir else path, exist_ok=True)
  _write_wav(tmp["wav"], clip["pcm"], SAMPLE_RATE)
  with open(tmp["align"], "w") as f:
    f.write(clip["align"])
  _write_video(tmp["mpg"], clip["frames"])
  _write_npz(tmp["npz"], clip["truth"])
  # The ground truth goes last: its presence marks the clip complete on restart.
  for key in ("wav", "align", "mpg", "npz"):
    os.replace(tmp[key], paths[key])
  return f"{job['speaker']}/{job['name']}"


_WORKER = {}


def _worker_init(root: str, template: FaceTemplate | None, crops: dict | None = None,
                 frame_size: tuple[int, int] | None = None) -> None:
  """``template``: the one face of the astronaut corpus; else ``crops`` (identity -> uint8
  photo crop) from which each speaker's template is built once per worker."""
  _WORKER.update(root=root, template=template, crops=crops, frame_size=frame_size,
                 templates={})


def _template_for(job: dict) -> FaceTemplate:
  if _WORKER["template"] is not None:
    return _WORKER["template"]
  key = job["speaker"]
  if key not in _WORKER["templates"]:
    p = job["params"]
    _WORKER["templates"][key] = build_face_template(
        _WORKER["frame_size"], photo=_WORKER["crops"][p["identity"]], look=_look(p))
  return _WORKER["templates"][key]


def _worker_run(job: dict) -> str:
  write = _write_lrw_clip if job.get("layout") == "lrw" else _write_clip
  return write(_WORKER["root"], job, _template_for(job))


def _photo_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs, speakers) -> dict:
  held = sorted((s for s, p in speakers.items() if p["heldout"]), key=lambda s: int(s[1:]))
  train = [s for s in speakers if s not in held]
  train_voices = {speakers[s]["voice"] for s in train}
  return dict(
      name="talkface_synthetic_grid", version=VERSION, faces="photos", seed=seed,
      num_speakers=num_speakers, clips_per_speaker=clips_per_speaker,
      frame_size=list(frame_size), fps=FPS, num_frames=NUM_FRAMES,
      sample_rate=SAMPLE_RATE, align_units_per_second=ALIGN_UNITS_PER_SECOND,
      face="real photos from PyPI packages (data_prep/synthetic/faces.json)",
      tts="espeak-ng (espeakng-loader)", speakers=speakers,
      heldout_speakers=held,
      unseen_identities=[speakers[s]["identity"] for s in held],
      unseen_voices=sorted({speakers[s]["voice"] for s in held} - train_voices),
      clips=[f"{j['speaker']}/{j['name']}" for j in jobs],
      sentences={f"{j['speaker']}/{j['name']}": " ".join(j["words"]) for j in jobs})


def _corpus_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs) -> dict:
  return dict(
      name="talkface_synthetic_grid", version=VERSION, seed=seed,
      num_speakers=num_speakers, clips_per_speaker=clips_per_speaker,
      frame_size=list(frame_size), fps=FPS, num_frames=NUM_FRAMES,
      sample_rate=SAMPLE_RATE, align_units_per_second=ALIGN_UNITS_PER_SECOND,
      face="skimage.data.astronaut", tts="espeak-ng (espeakng-loader)",
      speakers={f"s{s}": speaker_params(seed, s) for s in range(1, num_speakers + 1)},
      clips=[f"{j['speaker']}/{j['name']}" for j in jobs],
      sentences={f"{j['speaker']}/{j['name']}": " ".join(j["words"]) for j in jobs})


def generate_corpus(root: str, num_speakers: int, clips_per_speaker: int, seed: int = 0,
                    num_workers: int = 1, frame_size: tuple[int, int] | None = None,
                    progress: bool = False, layout: str = "grid", num_words: int = 0,
                    faces: str = "astronaut", num_heldout: int = 0,
                    photo_cache_dir: str | None = None) -> dict:
  """Writes (or completes) a synthetic corpus under ``root`` in GRID's or LRW's layout.

  Clips whose files already exist are skipped, so an interrupted run can be restarted; a
  ``corpus.json`` from different parameters is an error.

  Args:
    root: output folder.
    num_speakers: voices (GRID: speaker folders; LRW: voices drawn per clip).
    clips_per_speaker: GRID: sentences per speaker; LRW: clips per word (10 % val, 10 % test).
    seed: everything is a function of it.
    num_workers: processes.
    frame_size: (W, H); default GRID's 360x288 or LRW's 256x256.
    progress: show a progress bar.
    layout: 'grid' or 'lrw'.
    num_words: LRW: words (at most ``len(LRW_WORDS)``).
    faces: 'astronaut' (every speaker wears scikit-image's astronaut) or 'photos' (GRID
      layout: one real person per speaker, from :mod:`.faces`, fetched with pip into
      ``photo_cache_dir``; voices from every English accent, see
      :func:`photo_speaker_params`).
    num_heldout: 'photos': the last speakers, marked held out in ``corpus.json`` (their
      identities and voices are used by no other speaker).
    photo_cache_dir: 'photos': where the fetched photos are kept (default
      :func:`default_photo_cache`).

  Returns:
    summary dict: root, num_clips, generated, skipped, seconds, seconds_per_clip.
  """
  t0 = time.time()
  os.makedirs(root, exist_ok=True)
  if layout not in ("grid", "lrw"):
    raise ValueError(f"layout={layout!r}; expected 'grid' or 'lrw'")
  if frame_size is None:
    frame_size = LRW_FRAME_SIZE if layout == "lrw" else DEFAULT_FRAME_SIZE
  frame_size = tuple(int(v) for v in frame_size)
  if faces not in ("astronaut", "photos"):
    raise ValueError(f"faces={faces!r}; expected 'astronaut' or 'photos'")
  if faces == "photos" and layout != "grid":
    raise ValueError("faces='photos' is implemented for the grid layout only")
  if faces != "photos" and num_heldout:
    raise ValueError("num_heldout marks held-out speakers of faces='photos' only")
  speakers, crops = None, None
  if faces == "photos":
    speakers = photo_speaker_params(seed, num_speakers, num_heldout)
    jobs = _plan(seed, num_speakers, clips_per_speaker, speakers)
    meta = _photo_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs, speakers)
  elif layout == "lrw":
    jobs = _plan_lrw(seed, num_words, clips_per_speaker, num_speakers)
    meta = _lrw_meta(seed, num_words, clips_per_speaker, num_speakers, frame_size, jobs)
  else:
    jobs = _plan(seed, num_speakers, clips_per_speaker)
    meta = _corpus_meta(seed, num_speakers, clips_per_speaker, frame_size, jobs)
  meta_path = os.path.join(root, "corpus.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    if old != meta:
      raise ValueError(f"{meta_path} was written with other parameters; use a new out_dir")
  else:
    with open(meta_path + ".tmp", "w") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
    os.replace(meta_path + ".tmp", meta_path)
  complete = _lrw_clip_complete if layout == "lrw" else _clip_complete
  todo = [j for j in jobs if not complete(root, j)]
  bar = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm.tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="clip")
  if todo:
    template = None
    if speakers is None:
      template = build_face_template(frame_size)
    else:
      photos = {p.identity: p for p in face_photos.load_table()[0]}
      wanted = [photos[speakers[s]["identity"]] for s in sorted({j["speaker"] for j in todo})]
      paths = face_photos.fetch_photos(photo_cache_dir or default_photo_cache(), wanted,
                                       progress=progress)
      crops = {p.identity: face_photos.load_identity(p, paths[p.identity]) for p in wanted}
    init = (root, template, crops, frame_size)
    if num_workers > 1 and len(todo) > 1:
      # Spawn, not fork: the caller may hold threads (TF, tqdm) that fork would break.
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(min(num_workers, len(todo)), _worker_init, init) as pool:
        for _ in pool.imap_unordered(_worker_run, todo):
          if bar is not None:
            bar.update(1)
    else:
      _worker_init(*init)
      for job in todo:
        _worker_run(job)
        if bar is not None:
          bar.update(1)
  if bar is not None:
    bar.close()
  tmp_dir = os.path.join(root, ".tmp")
  if os.path.isdir(tmp_dir) and not os.listdir(tmp_dir):
    os.rmdir(tmp_dir)
  seconds = time.time() - t0
  return dict(root=root, num_clips=len(jobs), generated=len(todo),
              skipped=len(jobs) - len(todo), seconds=round(seconds, 3),
              seconds_per_clip=round(seconds / max(len(todo), 1), 4))



# --------------------------------------------------------------------------- LRW layout


def _lrw_split(index: int, clips_per_word: int) -> tuple[str, int]:
  """(split, 1-based number within the split) of a word's clip ``index``: 10 % val, 10 % test."""
  held = max(1, clips_per_word // 10) if clips_per_word >= 3 else 0
  train = clips_per_word - 2 * held
  if index < train:
    return "train", index + 1
  if index < train + held:
    return "val", index - train + 1
  return "test", index - train - held + 1


def _plan_lrw(seed: int, num_words: int, clips_per_word: int, num_speakers: int) -> list[dict]:
  """Deterministic LRW clip jobs: each word spoken ``clips_per_word`` times by drawn voices."""
  if not 0 < num_words <= len(LRW_WORDS):
    raise ValueError(f"num_words={num_words}: between 1 and {len(LRW_WORDS)}")
  if num_speakers < 1 or clips_per_word < 1:
    raise ValueError("num_speakers and clips_per_word must be positive")
  jobs = []
  for w, word in enumerate(LRW_WORDS[:num_words]):
    rng = np.random.default_rng([seed, w, 3])
    for i in range(clips_per_word):
      spk = 1 + int(rng.integers(num_speakers))
      split, number = _lrw_split(i, clips_per_word)
      name = f"{word.upper()}_{number:05d}"
      # clip_index makes each clip's random stream unique (speaker_index is shared).
      jobs.append(dict(layout="lrw", speaker=f"{word.upper()}/{split}", speaker_index=spk,
                       clip_index=1000 * (w + 1) + i, name=name, words=[word],
                       params=speaker_params(seed, spk), seed=seed))
  return jobs


def _lrw_paths(root: str, job: dict) -> dict:
  return dict(
      mp4=os.path.join(root, "lipread_mp4", job["speaker"], job["name"] + ".mp4"),
      txt=os.path.join(root, "lipread_mp4", job["speaker"], job["name"] + ".txt"),
      npz=os.path.join(root, "ground_truth", job["speaker"], job["name"] + ".npz"))


def _lrw_clip_complete(root: str, job: dict) -> bool:
  return all(os.path.exists(p) for p in _lrw_paths(root, job).values())


def _write_mp4(path: str, frames: np.ndarray, wav_path: str, fps: int = FPS) -> None:
  """H.264 video with AAC audio (from ``wav_path``) in an mp4, bit-exact flags, one thread."""
  height, width = frames.shape[1:3]
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
         "-i", "-", "-i", wav_path, "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
         "-threads", "1", "-c:a", "aac", "-b:a", "64k", "-ar", str(LRW_SAMPLE_RATE),
         "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
         "-flags:a", "+bitexact", "-shortest", path]
  subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True,
                 capture_output=True, timeout=600)


def _write_lrw_clip(root: str, job: dict, template: FaceTemplate) -> str:
  """Makes one LRW clip and writes its mp4, .txt and ground truth via temp files + rename."""
  clip = make_clip(job, template)
  paths = _lrw_paths(root, job)
  tmp_dir = os.path.join(root, ".tmp")
  tag = f"{job['speaker'].replace('/', '_')}_{job['name']}_{os.getpid()}"
  tmp = {k: os.path.join(tmp_dir, f"{tag}.{k}") for k in paths}
  for path in list(paths.values()) + [tmp_dir]:
    os.makedirs(os.path.dirname(path) if path != tmp_dir else path, exist_ok=True)
  wav = os.path.join(tmp_dir, f"{tag}.wav")
  _write_wav(wav, clip["pcm"], LRW_SAMPLE_RATE)
  _write_mp4(tmp["mp4"], clip["frames"], wav)
  os.remove(wav)
  with open(tmp["txt"], "w") as f:
    f.write(f"Word: {job['words'][0].upper()}\n"
            f"Duration: {clip['word_seconds']:.2f} seconds\n")
  _write_npz(tmp["npz"], clip["truth"])
  for key in ("mp4", "txt", "npz"):  # The ground truth last: it marks the clip complete.
    os.replace(tmp[key], paths[key])
  return f"{job['speaker']}/{job['name']}"


def _lrw_meta(seed, num_words, clips_per_word, num_speakers, frame_size, jobs) -> dict:
  return dict(
      name="talkface_synthetic_lrw", version=VERSION, seed=seed, num_words=num_words,
      clips_per_word=clips_per_word, num_speakers=num_speakers, frame_size=list(frame_size),
      fps=FPS, num_frames=LRW_NUM_FRAMES, sample_rate=LRW_SAMPLE_RATE,
      face="skimage.data.astronaut", tts="espeak-ng (espeakng-loader)",
      speakers={f"s{s}": speaker_params(seed, s) for s in range(1, num_speakers + 1)},
      clips=[f"{j['speaker']}/{j['name']}" for j in jobs])

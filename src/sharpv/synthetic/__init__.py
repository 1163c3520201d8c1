"""Synthetic video QA: scripted scenes, rendered frames, questions with one-word answers.

``generate(seed, n)`` returns items balanced over six question types (colour, position at the
end, motion direction, appearance time, colour change, count) and over each type's answers;
``item.frames()`` renders (T, H, W, 3) uint8 frames and ``item.write_mp4(path)`` writes a video.
"""

from sharpv.synthetic.dataset import QAItem, generate
from sharpv.synthetic.questions import QUESTION_TYPES

__all__ = ["QAItem", "QUESTION_TYPES", "generate"]

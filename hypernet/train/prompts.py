"""Training prompts from templates and captions, with A1111's tag shuffle and tag dropout.

A1111 splits the caption on ',' (keeping spaces), drops each tag with probability
`tag_dropout`, shuffles the survivors, rejoins them with ',' and substitutes the result for
`[filewords]`; `[name]` becomes the network name. Without shuffle or dropout the template
line is chosen once per image, so each image has one fixed prompt (and one cached
conditioning); with either, a line is drawn again every time the image is used.

`keep_tokens` is kohya's: the first N comma-separated tags of a caption are neither dropped nor
shuffled and stay first; the tags after them are dropped and shuffled as above (0 = A1111,
with the same random draws as before it existed)."""
from __future__ import annotations

import random
from typing import Sequence, Union

from ..errors import InputError
from .random_draws import derive_seed


def render_prompt(template: str, caption: str, name: str, rng: random.Random,
                  shuffle_tags: bool = False, tag_dropout: float = 0.0, keep_tokens: int = 0) -> str:
    """Fill one template line with `caption` (tags after the first `keep_tokens` shuffled/dropped
    using `rng`) and `name`."""
    tags = caption.split(",")
    fixed, tags = tags[:keep_tokens], tags[keep_tokens:]
    if tag_dropout > 0:
        tags = [tag for tag in tags if rng.random() > tag_dropout]
    if shuffle_tags:
        rng.shuffle(tags)
    return template.replace("[filewords]", ",".join(fixed + tags)).replace("[name]", name)


class PromptSource:
    """The prompt for image `i` at micro-batch `m`: a pure function of (seed, i, m)."""

    def __init__(self, captions: Sequence[str], templates: Sequence[str], name: str, seed: int,
                 shuffle_tags: bool = False, tag_dropout: float = 0.0, keep_tokens: int = 0):
        if not 0.0 <= tag_dropout < 1.0:
            raise InputError("tag_dropout", f"must be in [0, 1), got {tag_dropout}")
        if keep_tokens < 0:
            raise InputError("keep_tokens", f"must be 0 or more, got {keep_tokens}")
        self.captions, self.templates, self.name, self.seed = list(captions), list(templates), name, seed
        self.shuffle_tags, self.tag_dropout, self.keep_tokens = shuffle_tags, tag_dropout, keep_tokens
        self.varies = shuffle_tags or tag_dropout > 0
        self._fixed = None if self.varies else [self._render(i, "fixed") for i in range(len(self.captions))]

    def _render(self, index: int, *when: object) -> str:
        rng = random.Random(derive_seed(self.seed, "prompt", index, *when))
        template = rng.choice(self.templates)
        return render_prompt(template, self.captions[index], self.name, rng,
                             self.shuffle_tags, self.tag_dropout, self.keep_tokens)

    def prompt(self, index: int, micro_batch: Union[int, str]) -> str:
        """The prompt image `index` trains with at global micro-batch number `micro_batch` (or at a
        draw named by a label, such as "validation")."""
        if self._fixed is not None:
            return self._fixed[index]
        return self._render(index, micro_batch)

    def distinct_fixed_prompts(self) -> list[str]:
        """The fixed prompts (empty when prompts vary per step)."""
        return list(dict.fromkeys(self._fixed or []))

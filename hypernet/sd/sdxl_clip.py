"""SDXL's two text encoders behind the ComfyUI-CLIP-like interface, with ComfyUI's conventions.

- The same text is tokenized once with CLIP's vocabulary and padded twice: CLIP-L's chunks pad
  with the end token, OpenCLIP-G's with id 0. Chunking (77 tokens) and emphasis are SD1's.
- Each encoder is read at the CLIPSetLastLayer layer (default -2) *without* the final LayerNorm;
  a layer deeper than an encoder has falls back to its final-normed last layer. The two hidden
  states are concatenated, CLIP-L first: 768 + 1280 = 2048 channels.
- Emphasis weights apply per encoder, against that encoder's own encoding of the empty prompt.
- The pooled output is OpenCLIP-G's projected output at the first end token of chunk 0
  (transformers' CLIPTextModelWithProjection.text_embeds), untouched by weights and layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import torch

from .components import TextConditioning
from .headless_clip import HeadlessCLIP

if TYPE_CHECKING:
    from transformers import CLIPTextModel

SIDES = ("l", "g")  # ComfyUI's names: CLIP-L and OpenCLIP-G (bigG)


class HeadlessSDXLCLIP(HeadlessCLIP):
    """The CLIP object of an SDXL checkpoint. Tokens are {"l": {...}, "g": {...}}, each like
    HeadlessCLIP's {"input_ids", "weights"}, as ComfyUI's SDXL tokenizer returns them."""

    def _encoder(self, side: str) -> "CLIPTextModel":
        return self.components.text_encoder if side == "l" else self.components.text_encoder_2

    def _pad_id(self, side: str) -> int:
        tokenizer = self.components.tokenizer if side == "l" else self.components.tokenizer_2
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _layer_count(self) -> tuple[int, str]:
        """clip_layer reads both encoders at its layer (-1 = last layer, without the final LayerNorm),
        so it may count back as far as the deeper one goes; an encoder with fewer layers than
        |layer_idx| gives its final-normed last layer instead (see _hidden)."""
        return max(self._encoder(side).config.num_hidden_layers for side in SIDES), "the deeper text encoder"

    def tokenize(self, text: str) -> dict:
        """{"l": tokens, "g": tokens} for `text`: the same ids, each side padded its own way."""
        bodies = self._chunk_bodies(self._weighted_words(text))
        return {side: self._padded_tokens(bodies, self._pad_id(side)) for side in SIDES}

    def tokenize_pair(self, text_g: str, text_l: str) -> dict:
        """OpenCLIP-G's tokens from `text_g` and CLIP-L's from `text_l`; the side with fewer chunks
        gets empty-prompt chunks appended, so both encode to the same length (ComfyUI's rule)."""
        tokens = {"g": self.tokenize(text_g)["g"], "l": self.tokenize(text_l)["l"]}
        empty = self.tokenize("")
        chunks = max(len(tokens[side]["input_ids"]) for side in SIDES)
        for side in SIDES:
            missing = chunks - len(tokens[side]["input_ids"])
            tokens[side] = {key: torch.cat([value] + [empty[side][key]] * missing)
                            for key, value in tokens[side].items()}
        return tokens

    def _hidden(self, side: str, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The encoder's hidden states at the chosen layer [N,77,D] (fp32) and its full output
        (a transformers ModelOutput, untyped through Module.__call__; OpenCLIP-G's has text_embeds)."""
        encoder = self._encoder(side)
        output = encoder(input_ids=input_ids.to(next(encoder.parameters()).device), output_hidden_states=True)
        if -self.layer_idx <= encoder.config.num_hidden_layers:
            hidden = output.hidden_states[self.layer_idx]
        else:
            hidden = output.last_hidden_state
        return hidden.float(), output

    def _weighted_hidden(self, side: str, tokens: dict) -> tuple[torch.Tensor, Any]:
        """One side's [chunks,77,D] with emphasis applied against its own empty-prompt encoding."""
        input_ids, weights = tokens["input_ids"], tokens.get("weights")
        if weights is None or not bool((weights != 1.0).any()):
            return self._hidden(side, input_ids)
        empty = torch.tensor([self._pad_chunk([], self._pad_id(side))[0]], dtype=torch.long)
        hidden, output = self._hidden(side, torch.cat([input_ids, empty]))
        hidden, empty_hidden = hidden[:-1], hidden[-1:]
        weights = weights.to(hidden.device, hidden.dtype).unsqueeze(-1)
        return empty_hidden + (hidden - empty_hidden) * weights, output

    def encode_from_tokens(self, tokens: dict,
                           return_pooled: bool = False) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Conditioning [1, 77*chunks, 2048] (and the pooled output [1, 1280] of chunk 0)."""
        hidden_l, _ = self._weighted_hidden("l", tokens["l"])
        hidden_g, output_g = self._weighted_hidden("g", tokens["g"])
        hidden_l = hidden_l.reshape(1, -1, hidden_l.shape[-1])
        hidden_g = hidden_g.reshape(1, -1, hidden_g.shape[-1]).to(hidden_l.device)
        length = min(hidden_l.shape[1], hidden_g.shape[1])  # ComfyUI cuts both to the shorter side
        cond = torch.cat([hidden_l[:, :length], hidden_g[:, :length]], dim=-1)
        return (cond, output_g.text_embeds[:1].float().to(cond.device)) if return_pooled else cond

    def encode_conditioning(self, texts: list[str]) -> TextConditioning:
        """For training: one 77-token chunk per text (longer texts truncated, no emphasis):
        TextConditioning(context [B, 77, 2048], pooled [B, 1280]); time_ids stay None (the
        trainer knows each picture's size and crop: see sdxl.size_time_ids)."""
        hidden_l, _ = self._hidden("l", self._training_chunks(texts, self._pad_id("l")))
        hidden_g, output_g = self._hidden("g", self._training_chunks(texts, self._pad_id("g")))
        context = torch.cat([hidden_l, hidden_g.to(hidden_l.device)], dim=-1)
        return TextConditioning(context, output_g.text_embeds.float().to(context.device))

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """The context alone [B, 77, 2048]; an SDXL UNet also needs the pooled output, which
        encode_conditioning returns with it."""
        return self.encode_conditioning(texts).context

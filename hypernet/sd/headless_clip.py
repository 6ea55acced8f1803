"""The ComfyUI-CLIP-like text encoder of SD1/SD2 checkpoints (SDXL's subclass is in sdxl_clip.py):
tokenizing in 77-token chunks with ComfyUI's emphasis syntax, and encoding at a chosen layer."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from .components import SDComponents, TextConditioning
from .prompt_weights import parse_weighted_prompt

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

TOKENS_PER_CHUNK = 77
MAX_WORD_TOKENS = 8  # longer words may be split across chunks (ComfyUI's rule)


class HeadlessCLIP:
    """ComfyUI-CLIP-like text encoder: tokenize, encode_from_tokens, clip_layer.

    Prompts longer than 75 tokens are split into 77-token chunks whose encodings are
    concatenated along the token axis, as ComfyUI does, and ComfyUI's emphasis syntax
    `(word)` / `(word:1.2)` is honoured. `embedding:name` (textual inversion) is not: it is
    encoded as plain text. SDXL checkpoints get the subclass in sdxl_clip.py."""

    def __init__(self, components: SDComponents, layer_idx: Optional[int] = None):
        self.components = components
        self.layer_idx = components.default_clip_layer if layer_idx is None else layer_idx

    def clone(self) -> "HeadlessCLIP":
        return type(self)(self.components, self.layer_idx)

    def _layer_count(self) -> tuple[int, str]:
        """(how many layers `clip_layer` may count back, the encoder that has them, as messages name it)."""
        return self.components.text_encoder.config.num_hidden_layers, "this text encoder"

    def clip_layer(self, layer_idx: int) -> None:
        """Read the encoder's output at `layer_idx` (-1 = last), like CLIPSetLastLayer."""
        layers, encoder = self._layer_count()
        if not -layers <= layer_idx <= -1:
            raise ValueError(f"clip layer {layer_idx} is out of range: {encoder} has {layers} layers "
                             f"(use -1 .. -{layers})")
        self.layer_idx = layer_idx

    @property
    def tokenizer(self) -> "CLIPTokenizer":
        return self.components.tokenizer

    def _special_ids(self) -> tuple[int, int, int]:
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return tokenizer.bos_token_id, tokenizer.eos_token_id, pad

    def _pad_chunk(self, body: list[tuple[int, float]], pad: Optional[int] = None) -> tuple[list[int], list[float]]:
        """start + up to 75 (id, weight) tokens + end, padded to 77 (with `pad`, else the tokenizer's pad)."""
        bos, eos, own_pad = self._special_ids()
        pad = own_pad if pad is None else pad
        padding = TOKENS_PER_CHUNK - 2 - len(body)
        return ([bos] + [i for i, _ in body] + [eos] + [pad] * padding,
                [1.0] + [w for _, w in body] + [1.0] + [1.0] * padding)

    @staticmethod
    def _chunk_bodies(words: list[list[tuple[int, float]]]) -> list[list[tuple[int, float]]]:
        """Pack words into 75-token chunk bodies as ComfyUI does: a word that does not fit starts
        the next chunk, unless it is longer than MAX_WORD_TOKENS, in which case it is split."""
        body_size = TOKENS_PER_CHUNK - 2
        bodies: list[list[tuple[int, float]]] = [[]]
        for word in words:
            while word:
                room = body_size - len(bodies[-1])
                if len(word) <= room:
                    bodies[-1] += word
                    word = []
                elif len(word) > MAX_WORD_TOKENS:
                    bodies[-1] += word[:room]
                    word = word[room:]
                    bodies.append([])
                else:
                    bodies.append([])
        if len(bodies) > 1 and not bodies[-1]:
            bodies.pop()
        return bodies

    def _padded_tokens(self, bodies: list[list[tuple[int, float]]], pad: Optional[int] = None) -> dict:
        """{"input_ids": LongTensor [chunks, 77], "weights": FloatTensor [chunks, 77]} for chunk bodies."""
        padded = [self._pad_chunk(body, pad) for body in bodies]
        return {"input_ids": torch.tensor([ids for ids, _ in padded], dtype=torch.long),
                "weights": torch.tensor([weights for _, weights in padded], dtype=torch.float32)}

    def _token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _weighted_words(self, text: str) -> list[list[tuple[int, float]]]:
        """Each whitespace-separated word's (token id, emphasis weight) pairs."""
        words = []
        for segment, weight in parse_weighted_prompt(text):
            for word in segment.replace("\n", " ").split(" "):
                if word:
                    words.append([(token, weight) for token in self._token_ids(word)])
        return words

    def tokenize(self, text: str) -> dict:
        """Token ids {"input_ids": LongTensor [chunks, 77], "weights": FloatTensor [chunks, 77]},
        with ComfyUI's `(text)` / `(text:1.2)` emphasis turned into per-token weights."""
        return self._padded_tokens(self._chunk_bodies(self._weighted_words(text)))

    def _encode_ids(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states at the chosen layer [N,77,D] (final layer norm applied, as ComfyUI
        does for SD1/SD2) and the pooled output at each end-of-text token [N,D]."""
        encoder = self.components.text_encoder
        device = next(encoder.parameters()).device
        input_ids = input_ids.to(device)
        output = encoder(input_ids=input_ids, output_hidden_states=True)
        hidden = output.hidden_states[self.layer_idx]
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 5 flattened it
        hidden = output.last_hidden_state if self.layer_idx == -1 else final_norm(hidden)
        return hidden.float(), output.pooler_output.float()

    def encode_from_tokens(self, tokens: dict,
                           return_pooled: bool = False) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Conditioning [1, 77*chunks, D] (and the first chunk's pooled output [1, D]).

        Weighted tokens move away from the empty prompt's embedding at the same position:
        z = z_empty + (z - z_empty) * weight."""
        input_ids = tokens["input_ids"]
        weights = tokens.get("weights")
        if weights is not None and bool((weights != 1.0).any()):
            empty = torch.tensor([self._pad_chunk([])[0]], dtype=torch.long)
            cond, pooled = self._encode_ids(torch.cat([input_ids, empty]))
            cond, empty_cond, pooled = cond[:-1], cond[-1:], pooled[:-1]
            weights = weights.to(cond.device, cond.dtype).unsqueeze(-1)
            cond = empty_cond + (cond - empty_cond) * weights
        else:
            cond, pooled = self._encode_ids(input_ids)
        cond = cond.reshape(1, -1, cond.shape[-1])
        return (cond, pooled[:1]) if return_pooled else cond

    def _training_chunks(self, texts: list[str], pad: Optional[int] = None) -> torch.Tensor:
        """One 77-token chunk per text, longer texts truncated: LongTensor [B, 77]."""
        return torch.tensor([self._pad_chunk([(t, 1.0) for t in self._token_ids(text)][:TOKENS_PER_CHUNK - 2],
                                             pad)[0] for text in texts], dtype=torch.long)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """One 77-token chunk per text (longer texts are truncated): [B, 77, D], for training."""
        cond, _ = self._encode_ids(self._training_chunks(texts))
        return cond

    def encode_conditioning(self, texts: list[str]) -> TextConditioning:
        """What training feeds the UNet for `texts`, one chunk each: the context [B, 77, D], and
        on SDXL also the pooled output [B, 1280]; SD1/SD2 have none (pooled is None)."""
        return TextConditioning(self.encode_texts(texts))

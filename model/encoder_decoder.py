"""The T5-style encoder-decoder (Raffel et al. 2020), built from the decoder's own parts.

One token table serves the encoder, the decoder and (tied) the output layer.
The encoder is a bidirectional Stack; the decoder a causal Stack whose blocks
add a cross-attention sublayer over the encoder's output. Every option of
TransformerConfig (norm position, positions, GQA, GLU, MoE, ...) applies to
both stacks; rotary positions are used in self-attention only, since encoder
and decoder positions do not correspond.
"""
from __future__ import annotations

import flax.linen as nn

from model.transformer import Positions, Stack, TransformerConfig, attention_mask, output_logits, token_embedding


class EncoderDecoder(nn.Module):
    """batch["encoder_inputs"] (batch, enc_length) and batch["inputs"] (batch, dec_length) int32
    -> decoder logits (batch, dec_length, vocab) float32.

    batch["encoder_mask"] (batch, enc_length), optional: nonzero at real encoder
    tokens; padding is then hidden from encoder self-attention and cross-attention.
    """
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True):
        cfg = self.cfg
        embed = token_embedding(cfg)
        key_mask = None
        if batch.get("encoder_mask") is not None:
            key_mask = (batch["encoder_mask"] != 0)[:, None, None, :]  # (batch, 1, query, key)
        encoded = Stack(cfg, cfg.encoder_layers, encoder=True, name="encoder")(
            embed(batch["encoder_inputs"]), key_mask, deterministic)
        tokens = batch["inputs"]
        x = Stack(cfg, cfg.n_layers, name="decoder")(
            embed(tokens), attention_mask(cfg, Positions.of(tokens.shape[1])), deterministic, encoded, key_mask)
        return output_logits(cfg, embed, x)

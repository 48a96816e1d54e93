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
import jax.numpy as jnp

from model.transformer import Positions, Stack, TransformerConfig, attention_mask, output_logits, token_embedding


class EncoderDecoder(nn.Module):
    """batch["encoder_inputs"] (batch, enc_length) and batch["inputs"] (batch, dec_length) int32
    -> decoder logits (batch, dec_length, vocab) float32.

    batch["encoder_mask"] (batch, enc_length), optional: nonzero at real encoder
    tokens; padding is then hidden from encoder self-attention and cross-attention.

    decode=True runs the decoder incrementally, as Transformer(decode=True) does (see
    evaluation/generate.py). The first call encodes batch["encoder_inputs"], once: each decoder
    layer's cross-attention keys and values and the encoder mask go into the "cache" collection
    beside the self-attention KV cache. The later calls give only the next decoder tokens
    (batch["inputs"], no encoder_inputs): the encoder does not run and cross-attention reads its cache.
    """
    cfg: TransformerConfig

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True, decode: bool = False):
        cfg = self.cfg
        embed = token_embedding(cfg)
        tokens = batch["inputs"]
        where = Positions.decoding(self, tokens.shape[1]) if decode else Positions.of(tokens.shape[1])
        if decode and "encoder_inputs" not in batch:  # a later call: the first one encoded the inputs
            encoded, key_mask = None, self.get_variable("cache", "encoder_mask")
        else:
            encoded, key_mask = self.encode(embed, batch, deterministic)
            if decode:
                self.put_variable("cache", "encoder_mask", key_mask)
        x = Stack(cfg, cfg.n_layers, name="decoder")(
            embed(tokens), attention_mask(cfg, where), deterministic, encoded, key_mask, where)
        return output_logits(cfg, embed, x)

    def encode(self, embed: nn.Embed, batch: dict, deterministic: bool):
        """The encoder's output and the (batch, 1, 1, enc_length) mask of its real positions (all, without
        an encoder_mask): the key mask of encoder self-attention and of cross-attention."""
        inputs = batch["encoder_inputs"]
        real = batch.get("encoder_mask")
        key_mask = (jnp.ones_like(inputs, bool) if real is None else real != 0)[:, None, None, :]
        encoded = Stack(self.cfg, self.cfg.encoder_layers, encoder=True, name="encoder")(
            embed(inputs), key_mask, deterministic)
        return encoded, key_mask

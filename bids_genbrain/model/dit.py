"""GenBrain's diffusion transformer on brain-mask voxels, in the style of DiT's ``models.py``.

The input is the masked voxel vector (``x[mask]``, mask order) with one or more channels: the
noisy image, then any image conditions (a corrupted scan, source modalities). It is permuted into
token order (:class:`~bids_genbrain.model.tokens.TokenLayout`), padded, and embedded by a
convolution with kernel = stride = ``patch_size`` (the paper's patch embedding). A fixed 3D
sin-cos embedding of each token's centroid gives position. DiT blocks with adaLN-Zero are
conditioned on the sum of the timestep embedding and one embedding per condition; a final layer
maps tokens back to voxels (epsilon prediction). Modulation and output layers start at zero, so
a fresh model predicts zero.

Condition embeddings start at unit scale (table rows with std 1, an MLP with unit-scale hidden
units and a Xavier read-out), so they weigh on the conditioning vector like the timestep
embedding from the first step (DiT's std 0.02 table left a diagnosis 1-5 % of it, and the model
ignored it; docs/model.md). Every fine-tuning extension keeps the model's function at step 0 and
learns at the fine-tuning learning rate: a new categorical condition is a zero table, a new
continuous one has a zero read-out and null, a new level (a modality) copies an existing row,
new input channels get zero patch-embedding weights. The embedders of new conditions and levels
are listed by :meth:`GenBrainDiT.extension_parameters`; training gives them their own learning
rate (``TrainConfig.extension_lr_scale``), because a table row is a parameter of fan-in 1 that
Adam moves by about one learning rate per step.

Named configurations live in :mod:`bids_genbrain.model.presets`.

References
----------
Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023 (DiT).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .conditions import ConditionSpec
from .tokens import TokenLayout


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens ``x`` (B, T, H) by per-sample ``shift``/``scale`` (B, H)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding Layers for Timesteps and Conditions                   #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Embeds scalar diffusion timesteps into vectors (sinusoid, then an MLP)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        """Sinusoidal embeddings of (possibly fractional) timesteps ``t`` (B,) -> (B, dim)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps -> (B, hidden_size)."""
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Embeds categorical levels (DiT's table); row ``num_classes`` is the null embedding.

    Rows start at unit scale (normal, std 1; DiT: 0.02), so from the first step a level moves
    the conditioning vector about as much as the trained timestep embedding does (a few units
    per dimension) and the adaLN layers learn to read it.
    """

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)
        self.num_classes = num_classes

    def forward(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) level indices (``num_classes`` = null) and an optional drop mask -> (B, H)."""
        if drop is not None:
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class ContinuousEmbedder(nn.Module):
    """Embeds a standardised scalar (age, a score) by an MLP; NaN/dropped -> a learned null.

    A new model's hidden units and read-out are unit scale (its embeddings are on the timestep
    embedding's scale); a condition added to a trained model has a zero read-out and null, so
    its embedding is zero while the read-out's gradient is not.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(1, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.null = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, values: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) float values (NaN = missing) and an optional drop mask -> (B, H)."""
        missing = torch.isnan(values)
        if drop is not None:
            missing = missing | drop
        emb = self.mlp(torch.nan_to_num(values, nan=0.0).unsqueeze(-1).float())
        return torch.where(missing.unsqueeze(-1), self.null.expand_as(emb), emb)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_hidden, hidden_size),
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, H), conditioning (B, H) -> tokens (B, T, H)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.adaLN_modulation(c).chunk(6, dim=1)
        )
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        x = x + gate_msa.unsqueeze(1) * self.attn(h, h, h, need_weights=False)[0]
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN, then a linear map of each token back to its voxels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T, H), conditioning (B, H) -> (B, T, patch_size * out_channels)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class GenBrainDiT(nn.Module):
    """Diffusion transformer over the brain-mask voxel vector.

    Parameters
    ----------
    layout : TokenLayout
        Mask, token order and patch size.
    conditions : sequence of ConditionSpec
        Conditioning variables (timestep is always there).
    hidden_size, depth, num_heads : int
        Transformer width, number of blocks, attention heads.
    mlp_ratio : float
        MLP width / hidden size.
    in_channels : int
        Input channels: 1 (the noisy image) + number of image conditions.
    out_channels : int
        Output channels (1: the predicted noise).
    """

    def __init__(
        self,
        layout: TokenLayout,
        conditions: Sequence[ConditionSpec] = (),
        *,
        hidden_size: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} not divisible by num_heads {num_heads}")
        self.layout = layout
        self.patch_size = layout.patch_size
        self.hidden_size = hidden_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conditions: list[ConditionSpec] = [ConditionSpec.from_dict(c.to_dict())
                                                for c in conditions]
        if len({c.name for c in self.conditions}) != len(self.conditions):
            raise ValueError("condition names must be unique")

        self.x_embedder = nn.Conv1d(in_channels, hidden_size, kernel_size=self.patch_size,
                                    stride=self.patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.c_embedders = nn.ModuleDict({c.name: self._make_embedder(c) for c in self.conditions})
        self._extended: set[str] = set()  # embedders added by fine-tuning extensions
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, self.patch_size, out_channels)

        perm = torch.as_tensor(layout.permutation, dtype=torch.long)
        self.register_buffer("permutation", perm, persistent=False)
        self.register_buffer("inverse_permutation", torch.argsort(perm), persistent=False)
        pos = get_3d_sincos_pos_embed(hidden_size, layout.centroids())
        self.register_buffer("pos_embed", torch.from_numpy(pos).float().unsqueeze(0),
                             persistent=False)
        self.initialize_weights()

    def _make_embedder(self, spec: ConditionSpec) -> nn.Module:
        if spec.kind == "categorical":
            return LabelEmbedder(len(spec.levels), self.hidden_size)
        return ContinuousEmbedder(self.hidden_size)

    def initialize_weights(self) -> None:
        """DiT's initialisation: xavier linears, zero adaLN modulation and output layer."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.bias, 0)
        for emb in self.c_embedders.values():
            _init_embedder(emb)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    # ----------------------------------------------------------------- voxels <-> tokens
    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n_voxels) in mask order -> (B, C, n_tokens * patch_size) in token order."""
        x = x.index_select(-1, self.permutation)
        pad = self.layout.padded_length - self.layout.n_voxels
        return nn.functional.pad(x, (0, pad))

    def from_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, patch_size * C_out) -> (B, C_out, n_voxels) in mask order."""
        b, t, _ = x.shape
        x = x.reshape(b, t, self.out_channels, self.patch_size).permute(0, 2, 1, 3)
        x = x.reshape(b, self.out_channels, t * self.patch_size)[..., : self.layout.n_voxels]
        return x.index_select(-1, self.inverse_permutation)

    # ----------------------------------------------------------------- conditioning
    def condition_embedding(
        self,
        t: torch.Tensor,
        cond: Mapping[str, torch.Tensor],
        drop: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Sum of the timestep embedding and every condition's embedding, (B, H).

        A condition missing from ``cond`` is null for every sample.
        """
        c = self.t_embedder(t)
        n = t.shape[0]
        for spec in self.conditions:
            emb = self.c_embedders[spec.name]
            values = cond.get(spec.name)
            if values is None:
                values = (torch.full((n,), spec.null_index, dtype=torch.long, device=t.device)
                          if spec.kind == "categorical"
                          else torch.full((n,), float("nan"), device=t.device))
            c = c + emb(values.to(t.device), None if drop is None else drop.get(spec.name))
        return c

    def sample_drop(self, n: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Random CFG drop masks for training: each guided condition dropped with its rate.

        Parameters
        ----------
        n : int
            Batch size.
        generator : torch.Generator, optional
            CPU generator (reproducible).

        Returns
        -------
        dict of str to bool tensor (n,)
        """
        out = {}
        for spec in self.conditions:
            draw = torch.rand(n, generator=generator)
            out[spec.name] = (draw < spec.dropout).to(device)
        return out

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Mapping[str, torch.Tensor] | None = None,
        drop: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the noise.

        Parameters
        ----------
        x : torch.Tensor, shape (B, in_channels, n_voxels)
            Noisy image (channel 0) and image conditions, mask order.
        t : torch.Tensor, shape (B,)
            Diffusion timesteps.
        cond : mapping of str to tensor (B,)
            Encoded conditions (:meth:`ConditionSpec.encode`).
        drop : mapping of str to bool tensor (B,), optional
            Conditions replaced by their null embedding.

        Returns
        -------
        torch.Tensor, shape (B, out_channels, n_voxels)
        """
        if x.ndim != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.layout.n_voxels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, {self.layout.n_voxels}), got "
                f"{tuple(x.shape)}"
            )
        h = self.x_embedder(self.to_tokens(x)).transpose(1, 2) + self.pos_embed
        c = self.condition_embedding(t, cond or {}, drop)
        for block in self.blocks:
            h = block(h, c)
        return self.from_tokens(self.final_layer(h, c))

    def forward_with_cfg(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Mapping[str, torch.Tensor],
        cfg_scale: float,
    ) -> torch.Tensor:
        """Classifier-free guided prediction: ``uncond + cfg_scale * (cond - uncond)``.

        The conditional and unconditional halves run as one batch; the unconditional half drops
        every guided condition (``dropout > 0``) and keeps the others (the modality).

        Parameters
        ----------
        x, t, cond
            As in :meth:`forward`.
        cfg_scale : float
            Guidance scale; 1 gives the conditional prediction.

        Returns
        -------
        torch.Tensor, shape (B, out_channels, n_voxels)
        """
        n = x.shape[0]
        both = torch.cat([x, x], dim=0)
        tt = torch.cat([t, t], dim=0)
        cc = {k: torch.cat([v, v], dim=0) for k, v in cond.items()}
        half = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
        drop = {s.name: half.to(x.device) for s in self.conditions if s.dropout > 0}
        out = self.forward(both, tt, cc, drop)
        cond_eps, uncond_eps = out[:n], out[n:]
        return uncond_eps + cfg_scale * (cond_eps - uncond_eps)

    def extension_parameters(self) -> list[nn.Parameter]:
        """Parameters of the embedders that :meth:`add_condition` and :meth:`add_levels`
        created on this instance (a fine-tuning run gives them their own learning rate,
        :func:`bids_genbrain.model.train.make_optimizer`)."""
        return [p for name in sorted(self._extended) if name in self.c_embedders
                for p in self.c_embedders[name].parameters()]

    # ----------------------------------------------------------------- fine-tuning extensions
    def add_condition(self, spec: ConditionSpec) -> None:
        """Add a conditioning variable whose embedding starts at zero (function unchanged).

        A categorical embedder starts as a zero table, a continuous one with unit-scale hidden
        units, a zero read-out and a zero null: the output is zero at step 0 and the gradient
        is not. Its parameters are :meth:`extension_parameters`.

        Parameters
        ----------
        spec : ConditionSpec
            New condition; its name must be new.
        """
        if spec.name in self.c_embedders:
            raise ValueError(f"condition {spec.name!r} already exists")
        emb = self._make_embedder(spec).to(self.pos_embed.device)
        _init_embedder(emb, zero=True)
        self.c_embedders[spec.name] = emb
        self._extended.add(spec.name)
        self.conditions.append(ConditionSpec.from_dict(spec.to_dict()))

    def add_levels(self, name: str, levels: Sequence[str], init_from: str | None = None) -> None:
        """Add levels to a categorical condition (e.g. a new modality index).

        Parameters
        ----------
        name : str
            Categorical condition (``"modality"``).
        levels : sequence of str
            New level names.
        init_from : str, optional
            Existing level whose embedding the new levels copy (the new modality starts as
            that one); default the null embedding, so a new level starts as "missing".
        """
        spec = next((s for s in self.conditions if s.name == name), None)
        if spec is None or spec.kind != "categorical":
            raise ValueError(f"no categorical condition named {name!r}")
        clash = set(map(str, levels)) & set(spec.levels)
        if clash:
            raise ValueError(f"condition {name!r} already has levels {sorted(clash)}")
        old: LabelEmbedder = self.c_embedders[name]
        table = old.embedding_table.weight.data
        source = table[spec.levels.index(init_from)] if init_from is not None else table[-1]
        new_rows = source.unsqueeze(0).repeat(len(levels), 1)
        emb = LabelEmbedder(len(spec.levels) + len(levels), self.hidden_size).to(table.device)
        emb.embedding_table.weight.data.copy_(torch.cat([table[:-1], new_rows, table[-1:]]))
        self.c_embedders[name] = emb
        self._extended.add(name)
        spec.levels = spec.levels + [str(v) for v in levels]

    def add_input_channels(self, n: int) -> None:
        """Widen the patch embedding by ``n`` image-condition channels with zero weights.

        Parameters
        ----------
        n : int
            Channels to add after the existing ones.
        """
        if n < 1:
            raise ValueError("add at least one input channel")
        old = self.x_embedder
        new = nn.Conv1d(self.in_channels + n, self.hidden_size, kernel_size=self.patch_size,
                        stride=self.patch_size).to(old.weight.device)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, : self.in_channels] = old.weight
            new.bias.copy_(old.bias)
        self.x_embedder = new
        self.in_channels += n


def _init_embedder(emb: nn.Module, *, zero: bool = False) -> None:
    """Unit-scale embedders; ``zero`` for a condition added to a trained model.

    Categorical: table rows normal with std 1 (``zero``: all rows zero). Continuous: first
    layer weights and biases normal with std 1 (one standard deviation of the value moves the
    hidden units by about one), read-out Xavier uniform and null normal with std 1 (``zero``:
    read-out and null zero, so the output is zero while the read-out's gradient is not).
    """
    if isinstance(emb, LabelEmbedder):
        nn.init.normal_(emb.embedding_table.weight, std=0.0 if zero else 1.0)
        return
    nn.init.normal_(emb.mlp[0].weight, std=1.0)
    nn.init.normal_(emb.mlp[0].bias, std=1.0)
    if zero:
        nn.init.zeros_(emb.mlp[2].weight)
        nn.init.zeros_(emb.null)
    else:
        nn.init.xavier_uniform_(emb.mlp[2].weight)
        nn.init.normal_(emb.null, std=1.0)
    nn.init.zeros_(emb.mlp[2].bias)


#################################################################################
#                        3D Sine/Cosine Positional Embedding                    #
#################################################################################


def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    """Sin-cos embedding of positions ``pos`` (M,) -> (M, embed_dim); ``embed_dim`` even."""
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_3d_sincos_pos_embed(embed_dim: int, centroids: np.ndarray) -> np.ndarray:
    """Sin-cos embedding of token centroids.

    Parameters
    ----------
    embed_dim : int
        Hidden size; each axis gets ``2 * (embed_dim // 6)`` dimensions, the rest are zero.
    centroids : ndarray, shape (T, 3)
        Token centroids in mm.

    Returns
    -------
    ndarray of float64, shape (T, embed_dim)
    """
    per_axis = 2 * (embed_dim // 6)
    parts = [get_1d_sincos_pos_embed_from_grid(per_axis, centroids[:, a]) for a in range(3)]
    emb = np.concatenate(parts, axis=1)
    return np.pad(emb, ((0, 0), (0, embed_dim - emb.shape[1])))

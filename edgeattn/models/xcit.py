"""XCiT baselines (facebookresearch/xcit): the SimA nets' skeleton with softmax attention.

``xcit_{nano,tiny,small}_12_p{16,8}`` and ``xcit_{tiny,small,medium,large}_24_p{16,8}``: the
same :class:`~edgeattn.models.sima.XCiTVisionTransformer` with cross-covariance attention
(:class:`~edgeattn.attention.xca.XCA`) and softmax class attention. Keys equal the SimA nets'
plus ``blocks.i.attn.temperature``, as in the official XCiT checkpoints (``pos_embeder.*``, fused
class-attention ``qkv``). timm's XCiT state_dicts rename the encoder to ``pos_embed.*`` and split
class attention's ``qkv`` into ``q``, ``k``, ``v``; :mod:`edgeattn.models.checkpoint` maps both back.
"""

from __future__ import annotations

from edgeattn.models.registry import ExportFacts, PaperFigures
from edgeattn.models.sima import register_family

# Parameters from the official XCiT README's model zoo (facebookresearch/xcit; its GFLOPs column is
# commented out there), the same for /16 and /8.
_README = "XCiT README (params)"
XCIT_PAPER = {
    size: PaperFigures(params_m, None, _README)
    for size, params_m in {
        "nano_12": 3,
        "tiny_12": 7,
        "small_12": 26,
        "tiny_24": 12,
        "small_24": 48,
        "medium_24": 84,
        "large_24": 189,
    }.items()
}

#: Export facts of the XCiT nets (the patch size is filled in per variant).
XCIT_EXPORT = ExportFacts(
    method="xca",
    tolerance="TOL_XCA",
    tolerance_reason="l2-normalised q, k and a d×d softmax: as benign as softmax attention",
)

XCIT_MODELS = register_family("xcit", "xca", "xcit", paper=XCIT_PAPER, export=XCIT_EXPORT)

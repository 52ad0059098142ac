"""Deterministic synthetic datasets written in the on-disk layouts the real loaders read.

* :func:`make_landmark_phantoms`: X-ray-like 2D phantoms whose landmarks sit on visible bone corners.
* :func:`make_cxr_dataset`: chest-X-ray-like images with long-tailed multi-labels and short reports, in the
  MIMIC-like ``reports.csv`` and the NIH ChestX-ray14 layouts.
* :func:`make_ct_dataset`: CT-like NIfTI volumes with organ label maps in the MSD layout.

Demos generate them on first use under :func:`default_cache_dir` (``$MEDZOO_CACHE``, default
``~/.cache/medzoo``). Same arguments and seed give byte-identical files; item ``i`` depends only on
``(seed, i)``.
"""

from medzoo.synthetic.cache import default_cache_dir
from medzoo.synthetic.ct import CT_ORGANS, ct_organ_table, make_ct_dataset, render_ct_volume
from medzoo.synthetic.cxr import (
    NIH_FINDINGS,
    NIH_FREQUENCY_RANK,
    make_cxr_dataset,
    render_cxr,
    write_cxr_report,
)
from medzoo.synthetic.landmarks import (
    LandmarkPhantomTemplate,
    landmark_phantom_template,
    make_landmark_phantoms,
    render_landmark_phantom,
)

__all__ = [
    "CT_ORGANS",
    "NIH_FINDINGS",
    "NIH_FREQUENCY_RANK",
    "LandmarkPhantomTemplate",
    "ct_organ_table",
    "default_cache_dir",
    "landmark_phantom_template",
    "make_ct_dataset",
    "make_cxr_dataset",
    "make_landmark_phantoms",
    "render_ct_volume",
    "render_cxr",
    "render_landmark_phantom",
    "write_cxr_report",
]

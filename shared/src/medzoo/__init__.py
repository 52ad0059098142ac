"""medzoo-core: the thin core that every medzoo paper package stands on.

Submodules are imported on demand (``from medzoo.io import read_image``) so that importing
``medzoo`` stays cheap; MONAI and Lightning load only where they are used.
"""

__version__ = "0.5.0"

__all__ = ["__version__"]

"""Data sets and preprocessing shared by calibration, QAT and eval.

Sources (:func:`open_dataset` tells them apart):

- ``imagefolder``: a folder of class sub-folders of images (JPEG, PNG, ...). Classes are the
  sub-folder names sorted like torchvision's ``ImageFolder`` (hidden folders are ignored), files
  are found recursively, labels are class indices.
- ``flat``: a folder of images without class sub-folders (calibration). Unlabelled unless
  ``labels`` names a ``.npy`` array or a text file with one integer per line, in sorted file
  name order.
- ``idx``: IDX files (``*-idx3-ubyte[.gz]`` images, ``--labels *-idx1-ubyte[.gz]``), grey to RGB
  (:mod:`maxq_deploy.data.idx`).
- ``arrays``: ``.npy`` (NCHW float images, already preprocessed; labels from ``labels``) or
  ``.npz`` (``images`` or ``x``, optional ``labels`` or ``y``; an explicit ``labels`` wins).

Images are decoded with Pillow and preprocessed as torchvision's eval transform does: RGB,
shorter side resized to ``resize`` (bilinear), center crop ``image_size``, [0, 1], normalize.
Every Pillow mode becomes 8-bit RGB first, deep images scaled, never clipped, and non-finite
ones refused (:mod:`maxq_deploy.data.decode`).

Folder walks follow symbolic links but never into a folder already walked (a link to an
ancestor or a sibling), never count one file twice (links and hard links included), and skip
anything that is not a regular file (a FIFO named ``x.jpg`` would block). Entries that cannot be
read (a dangling link, a folder without permission, a link loop) are counted and named by
``ImageDataset.unreadable``; the loader reports them with the images it could not decode.

``.npy``/``.npz`` images holding NaN or Inf are refused when opened, naming the file and the
first bad index, and so are absurd batches (:mod:`maxq_deploy.core.memory`).

Unreadable images never crash a run. ``dataset[i]`` returns ``(Unreadable(path, reason), label)``
for them; the loader from :func:`make_loader` (a :class:`Batches`) drops them in its
``collate_fn``, which runs inside the worker processes, and carries the count along with each
batch, so its totals are exact with any number of workers. Iterate it as a plain loader
(``for images, labels in loader``) and read ``loader.report`` (a :class:`DataReport`) after
the loop; every new iteration starts a new count.
"""

from maxq_deploy.core.memory import FORWARD_MEMORY_FACTOR, available_memory_bytes, check_batch_memory  # noqa: F401
from maxq_deploy.data.datasets import ARRAY_SUFFIXES, IMAGE_SUFFIXES, ImageDataset, check_input_shape  # noqa: F401
from maxq_deploy.data.decode import (  # noqa: F401  (part of this package's API)
    MAX_RESIZED_PIXELS,
    NonFinite,
    NonFiniteImageError,
    Unreadable,
    check_finite,
    first_non_finite,
    load_rgb,
    to_rgb8,
)
from maxq_deploy.data.labels import MAX_LABEL, check_labels, read_labels  # noqa: F401  (part of this package's API)
from maxq_deploy.data.loader import (  # noqa: F401  (part of this package's API)
    MAX_NAMED_SKIPS,
    Batches,
    DataReport,
    ShardSampler,
    collate_dropping_unreadable,
    make_loader,
)
from maxq_deploy.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_SIDE, Preprocess  # noqa: F401
from maxq_deploy.data.sources import open_dataset  # noqa: F401  (callers reach it through the package: tests patch it there)

"""Pictures with a known answer, for the tests of code/images.py and of training on them: discs of two colours of
equal brightness (colour is the only difference), and the EXIF orientations written from the standard's words
(VIEW: how a viewer turns the stored rows; STORE: how a camera stores an upright picture)."""
import numpy as np
from PIL import Image

RED, GREEN = (196, 0, 0), (0, 100, 0)  # equal luma (0.299 * 196 = 0.587 * 100): the same grey


def disc(colour, size=28, rng=None):
    rng = rng or np.random.default_rng(0)
    arr = np.zeros((size, size, 3), np.uint8)
    cy, cx = rng.integers(9, size - 9, 2)
    yy, xx = np.mgrid[:size, :size]
    arr[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] = colour
    return Image.fromarray(arr)


def orientation_tag(value):
    """EXIF holding the Orientation ``value``, under the tag code/images.py reads."""
    import images

    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = value
    return exif


# EXIF 2.3's Orientation, read as the turn that shows the stored rows upright (numpy: row 0 at the top), written
# here from the standard's words, not from Pillow
VIEW = {1: lambda a: a,                                 # as stored
        2: lambda a: a[:, ::-1],                        # mirrored left-right
        3: lambda a: a[::-1, ::-1],                     # turned 180 degrees
        4: lambda a: a[::-1],                           # mirrored top-bottom
        5: lambda a: np.swapaxes(a, 0, 1),              # mirrored left-right, then turned 270 degrees clockwise
        6: lambda a: np.rot90(a, -1),                   # turned 90 degrees clockwise
        7: lambda a: np.rot90(a[:, ::-1], -1),          # mirrored left-right, then turned 90 degrees clockwise
        8: lambda a: np.rot90(a, 1)}                    # turned 270 degrees clockwise
# how a camera stores an upright picture under each tag: the inverse turn
STORE = {1: VIEW[1], 2: VIEW[2], 3: VIEW[3], 4: VIEW[4], 5: VIEW[5], 6: VIEW[8], 7: VIEW[7], 8: VIEW[6]}

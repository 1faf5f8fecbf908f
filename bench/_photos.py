"""The benchmark photographs: scikit-image's bundled colour photographs, name -> loader."""

from skimage import data

# skimage.data.cat is chelsea again, so it is left out: it would count twice in geometric means.

PHOTOS = {
    "astronaut": data.astronaut,
    "chelsea": data.chelsea,
    "coffee": data.coffee,
    "rocket": data.rocket,
    "immunohistochemistry": data.immunohistochemistry,
    "hubble_deep_field": data.hubble_deep_field,
    "stereo_motorcycle": lambda: data.stereo_motorcycle()[0],
    "retina": data.retina,
}
SYNTHETIC = {"colorwheel": data.colorwheel}

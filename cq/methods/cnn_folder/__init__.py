"""``cnn_folder``: one convolutional palette network trained over a folder's images, which predicts
each image's palette in one forward pass; per image the prediction starts the exact score's descent.

Modules: ``features`` (what the network sees), ``network`` (the network), ``train`` (training
over a folder, the network file), ``method`` (the registered method: predict, then descend from the prediction).
torch is imported only when the method runs or a network is trained.
"""

from cq.methods.cnn_folder import method  # noqa: F401  (registers the method)

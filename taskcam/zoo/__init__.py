"""The model zoo: ``zoo:NAME`` models with their weights, preprocessing and class names.

- :mod:`taskcam.zoo.registry`: the entries and how each is built (``taskcam zoo`` lists them);
- :mod:`taskcam.zoo.shapes_models`: the shapes models, real architectures trained on
  :mod:`taskcam.data.shapes`, whose weights ship with taskcam;
- :mod:`taskcam.zoo.train`: ``taskcam zoo train NAME`` and ``taskcam zoo check``.

Example:
    >>> [e.name for e in available_zoo()][:2]
    ['efficientnet-lite0', 'shapes-cnn']
"""

from taskcam.zoo.registry import ZooEntry, available_zoo, build_zoo_model, register_zoo

__all__ = ["ZooEntry", "available_zoo", "build_zoo_model", "register_zoo"]

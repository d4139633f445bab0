"""Jobs (layer 6): end-to-end runs built from everything below.

* :mod:`.store_resnet` — the main job: a ResNet stored on emulated RRAM with several
  encoders and read back over time (``analogmem demo`` / ``analogmem store``);
* :mod:`.cells_demo` — the cell physics: level distributions and error rates over time
  (``analogmem cells``).
"""

"""Jobs (layer 6): end-to-end runs built from everything below.

* :mod:`.store_resnet` — the main job (thesis ch.3): a ResNet stored on an emulated card at
  several budgets of cells per weight, analog coding against digital + ECC, over N chips
  (``analogmem demo`` / ``analogmem store``); :mod:`.store_plans` its candidate
  configurations and their selection, :mod:`.store_chip` one chip's work;
* :mod:`.chips` — Monte-Carlo chips: seeds spawned from one ``SeedSequence``, run serially
  or as Ray tasks, summarised as mean and Student-t 95 % interval;
* :mod:`.cells_demo` — the cell physics: level distributions and error rates over time
  (``analogmem cells``).
"""

# cython: language_level=3
# The compiled kernels' parameter object (analogmem.emulator._kernels.KernelParams): a card's
# am_params (and its float32 twin) packed once, held for the life of a bench.

from am_kernels cimport am_fparams, am_params


cdef class KernelParams:
    cdef am_params p            # the card (and, after with_pulse_table, a pulse-response table)
    cdef am_fparams f           # its float32 twin (am_fparams_of), for float32 benches
    cdef bint need[5]           # which of STATE_KEYS the card uses
    cdef readonly object card   # the CardParams it was packed from (keeps the arrays p points into alive)
    cdef readonly object fault_key
    cdef readonly object pulse_table  # the PulseArrays of p.pr_* (None: no pulse-response table)
    cdef int check_state(self, tuple arrays) except -1

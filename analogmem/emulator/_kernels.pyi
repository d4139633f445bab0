"""Type stub of the compiled kernels (``ext/_kernels.pyx``, built into ``analogmem.emulator._kernels``)."""


import numpy as np

from .card_params import CardParams, PulseArrays

#: True when the kernels were compiled with OpenMP (multi-threaded chunks).
OPENMP: bool
MAX_COEFFICIENTS: int
MAX_RELAXATION_TIMES: int
MAX_PULSE_COMPONENTS: int
MAX_DRIFT_KNOTS: int
#: Cells per unit of parallel work (a scheduling choice: results do not depend on it).
WORK_CHUNK: int

_State = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]

class KernelParams:
    """A device card packed for the kernels once (the C struct lives in the object)."""

    @property
    def card(self) -> CardParams: ...
    @property
    def fault_key(self) -> tuple[int, int, int] | None: ...
    @property
    def pulse_table(self) -> PulseArrays | None: ...
    @property
    def faults_on(self) -> bool: ...
    def __init__(self, card: CardParams, fault_key: tuple[int, int, int] | None = None) -> None: ...
    def with_pulse_table(self, table: PulseArrays) -> KernelParams: ...

def program(params: KernelParams, key: tuple[int, int, int], g_target: np.ndarray, stuck: np.ndarray | None,
            state: _State, n_threads: int, first: int = 0, verify_max_pulses: int = 0, tol_abs: float = 0.0,
            tol_rel: float = 0.0, pulses: np.ndarray | None = None, success: np.ndarray | None = None,
            verify_card: int = 0, general: bool = False) -> None: ...
def read(params: KernelParams, key: tuple[int, int, int], state: _State, age_s: np.ndarray, out: np.ndarray,
         n_threads: int, first: int = 0, general: bool = False) -> None: ...
def stuck(params: KernelParams, first: int, n: int, addresses: np.ndarray | None = None,
          n_threads: int = 1) -> np.ndarray: ...
def max_threads() -> int: ...

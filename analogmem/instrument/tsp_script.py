"""The TSP script that a 2600B bench loads: write-verify and batched reads run on the
instrument.

:func:`render_script` writes (real Lua 5.0, as a 2600B runs it) two functions:

* ``analogmem_program(cells, tg, lo, hi, v0, nmax, verify)`` — for each cell (0-based
  address, routed through ``channel.close("1!row!col")``): RESET if the scheme says so,
  then SET pulses (``PulseVMeasureI``) with a read after each (verify) until the read lies
  in ``[lo, hi]`` or ``nmax`` pulses were spent, the amplitude updated by the policy of
  :class:`~analogmem.instrument.verify_policy.VerifyPolicy`. Returns one string,
  ``pulses,ok,g_S,resets,v_V`` per cell joined with ``,``;
* ``analogmem_read(cells, vread)`` — the read current (A) of each cell, joined with ``,``.

The safety limits are constants of the script, written when it is loaded from the bench's
:class:`~analogmem.instrument.limits.SafetyLimits`: **every** level the script sources goes
through ``clampv`` (into ``[-max_reset_V, max_set_V]``), every read level through
``clampr`` (``|V| <= max_read_V``), every width through ``clampw``, ``nmax`` through the
policy's budget and the compliance is ``compliance_A`` — so a host-side defect that asks
for more (an amplitude, a width, a pulse count) cannot pulse past the limits. The host
checks the whole request before sending anyway (:func:`check_program_request`).
"""

from __future__ import annotations

from .limits import SafetyLimits, VoltageScheme

__all__ = ["SCRIPT_NAME", "render_script"]

#: Name of the loaded script (``loadscript analogmemwv``).
SCRIPT_NAME = "analogmemwv"


def _f(x: float) -> str:
    return repr(float(x))


#: The script's first line.
_HEADER = "-- analogmem write-verify for Keithley 2600B (generated; limits are constants)"

#: Clamps into the limits, routing, one pulse, one read (conductance, S) and the source set-up.
_HELPERS = """\
local function clampv(v)
  if v > VSET then v = VSET end
  if v < -VRESET then v = -VRESET end
  return v
end
local function clampr(v)
  if v > VREAD then v = VREAD end
  if v < -VREAD then v = -VREAD end
  return v
end
local function clampw(w)
  if w < WMIN then w = WMIN end
  if w > WMAX then w = WMAX end
  return w
end
local function route(c)
  channel.open("allslots")
  channel.close("1!" .. (math.floor(c / COLS) + 1) .. "!" .. (math.mod(c, COLS) + 1))
end
local function pulse(v, w)
  smua.nvbuffer1.clear()
  PulseVMeasureI(smua, 0, clampv(v), clampw(w), clampw(w), 1)
  smua.source.levelv = 0
end
local function readg(vr)
  vr = clampr(vr)
  smua.source.levelv = vr
  smua.source.output = smua.OUTPUT_ON
  local i = smua.measure.i()
  smua.source.output = smua.OUTPUT_OFF
  smua.source.levelv = 0
  return i / vr
end
local function setup()
  smua.source.output = smua.OUTPUT_OFF
  smua.source.func = smua.OUTPUT_DCVOLTS
  smua.source.limiti = ILIM
  smua.source.levelv = 0
end
"""

#: ``analogmem_program(cells, tg, lo, hi, v0, nmax, verify)``: RESET first if the scheme
#: says so, then SET pulses with a read after each until the read is in ``[lo, hi]``.
_PROGRAM = """\
function analogmem_program(cells, tg, lo, hi, v0, nmax, verify)
  setup()
  if nmax > NMAX then nmax = NMAX end
  if nmax < 1 then nmax = 1 end
  local out = {}
  for j = 1, table.getn(cells) do
    route(cells[j])
    local resets = 0
    if RESET_FIRST then
      pulse(V_RESET, W_RESET)
      resets = 1
    end
    local v = clampv(v0[j])
    if v < V_LO then v = V_LO end
    local n, ok, g = 0, 0, -1
    if verify == 1 then
      while n < nmax do
        pulse(v, W_SET)
        n = n + 1
        g = readg(V_READ)
        if g >= lo[j] and g <= hi[j] then
          ok = 1
          break
        end
        v = v + GAIN * (tg[j] - g) / SLOPE
        if v < V_LO then v = V_LO end
        if v > VSET then v = VSET end
        if g > hi[j] and n < nmax then
          pulse(V_RESET, W_RESET)
          resets = resets + 1
        end
      end
    else
      pulse(v, W_SET)
      n = 1
    end
    table.insert(out, n .. "," .. ok .. "," .. g .. "," .. resets .. "," .. v)
  end
  channel.open("allslots")
  return table.concat(out, ",")
end
"""

#: ``analogmem_read(cells, vr)``: the read current (A) of each cell.
_READ = """\
function analogmem_read(cells, vr)
  setup()
  local out = {}
  for j = 1, table.getn(cells) do
    route(cells[j])
    vr = clampr(vr)
    smua.source.levelv = vr
    smua.source.output = smua.OUTPUT_ON
    table.insert(out, smua.measure.i())
    smua.source.output = smua.OUTPUT_OFF
    smua.source.levelv = 0
  end
  channel.open("allslots")
  return table.concat(out, ",")
end
"""


def _constants(scheme: VoltageScheme, limits: SafetyLimits, cols: int, max_pulses: int,
               v_lo_V: float) -> list[tuple[str, str]]:
    """The script's constants (Lua name, Lua literal): the limits, the matrix width, the
    pulse budget and the scheme's levels, widths and verify update."""
    s, lim = scheme, limits
    return [("VSET", _f(lim.max_set_V)), ("VRESET", _f(lim.max_reset_V)), ("VREAD", _f(lim.max_read_V)),
            ("WMIN", _f(lim.min_pulse_width_s)), ("WMAX", _f(lim.max_pulse_width_s)), ("ILIM", _f(lim.compliance_A)),
            ("NMAX", str(int(max_pulses))), ("COLS", str(int(cols))), ("V_RESET", _f(s.v_reset_V)),
            ("W_SET", _f(s.set_width_s)), ("W_RESET", _f(s.reset_width_s)), ("V_READ", _f(s.v_read_V)),
            ("V_LO", _f(v_lo_V)), ("GAIN", _f(s.verify_gain)), ("SLOPE", _f(s.slope_S_per_V)),
            ("RESET_FIRST", "true" if s.reset_first else "false")]


def render_script(scheme: VoltageScheme, limits: SafetyLimits, cols: int, max_pulses: int, v_lo_V: float) -> str:
    """The Lua source of the script (see the module docstring).

    Args:
        scheme: RESET level and widths, read level, verify gain and slope, reset-first.
        limits: the clamps written into the script.
        cols: matrix columns (cell ``a`` is at ``1!(a // cols + 1)!(a % cols + 1)``).
        max_pulses: the largest ``nmax`` the script accepts (the policy's budget).
        v_lo_V: the lowest SET amplitude the update chooses (V).
    """
    constants = "".join(f"local {name} = {value}\n" for name, value in _constants(scheme, limits, cols, max_pulses,
                                                                                   v_lo_V))
    return f"{_HEADER}\n{constants}{_HELPERS}{_PROGRAM}{_READ}"

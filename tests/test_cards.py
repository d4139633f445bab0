"""Device cards: loading, the published coefficients, and malformed cards."""

from __future__ import annotations

import math

import numpy as np
import pytest

import analogmem
from analogmem import DeviceCardError, load_device
from analogmem.emulator.cells import parse_card

# Wan et al., Nature 2022 (aihwkit ReRamWan2022NoiseModel): σ(x) polynomials in µS at
# g_max = 40 µS, coefficients low -> high order.
WAN = {
    1.0: [0.348, 16.030, -43.853, 45.393, -16.815],
    86400.0: [0.701, 22.086, -50.773, 47.095, -16.458],
    172800.0: [0.782, 20.274, -43.507, 37.062, -11.934],
}


def wan_sigma_uS(x, t):
    return sum(c * x**k for k, c in enumerate(WAN[t]))


def test_bundled_cards_are_listed_and_load():
    names = analogmem.bundled_devices()
    assert {"pcm-nandakumar2019", "rram-wan2022"} <= set(names)
    for name in names:
        dev = load_device(name)
        assert dev.name == name
        assert dev.source["citation"]
        assert len(dev.card_sha256) == 64


def test_load_by_path_equals_load_by_name(tmp_path, card_text):
    p = tmp_path / "my.toml"
    p.write_text(card_text("rram-wan2022"))
    a, b = load_device(p), load_device("rram-wan2022")
    assert a.card_sha256 == b.card_sha256
    assert a.relaxation == b.relaxation and a.programming == b.programming


def test_pcm_card_matches_design_formulas():
    """The published PCM model (Nandakumar et al., ICECS 2019), coefficient by coefficient and its sanity values."""
    dev = load_device("pcm-nandakumar2019")
    g_max = 25e-6
    assert dev.g_max_S == g_max and dev.drift.t0_s == 20.0 and dev.read_noise.t_read_s == 250e-9
    x = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 1.0])
    g = x * g_max
    np.testing.assert_allclose(dev.sigma_program_S(g), 1e-6 * (0.26348 + 1.9650 * x - 1.1731 * x**2), rtol=1e-12)
    np.testing.assert_allclose(dev.drift_mu(g), np.clip(-0.0155 * np.log(x) + 0.0244, 0.049, 0.1), rtol=1e-12)
    np.testing.assert_allclose(dev.drift_sigma(g), np.clip(-0.0125 * np.log(x) - 0.0059, 0.008, 0.045), rtol=1e-12)
    np.testing.assert_allclose(dev.read_noise_q(g), np.minimum(0.0088 / x**0.65, 0.2), rtol=1e-12)
    # Sanity values of the published model (Nandakumar et al., ICECS 2019).
    assert dev.sigma_program_S(0.5 * g_max) * 1e6 == pytest.approx(0.953, abs=5e-4)
    for t, factor in ((3600.0, 0.775), (86400.0, 0.664), (365 * 86400.0, 0.497)):
        assert dev.drift_factor(0.049, t) == pytest.approx(factor, abs=5e-4)
    t = 86400.0
    assert dev.read_noise_time_factor(t) == pytest.approx(math.sqrt(math.log((t + 20 + 250e-9) / 500e-9)))


def test_rram_card_reproduces_wan2022_polynomials_at_published_times():
    dev = load_device("rram-wan2022")
    x = np.linspace(0, 1, 11)
    for t in WAN:
        np.testing.assert_allclose(dev.sigma_total_relaxation_S(x * 40e-6, t), 1e-6 * wan_sigma_uS(x, t), rtol=1e-12)
    # programming noise is the 1 s spread; relaxation adds what grows after it
    np.testing.assert_allclose(dev.sigma_program_S(x * 40e-6), 1e-6 * wan_sigma_uS(x, 1.0), rtol=1e-12)
    np.testing.assert_allclose(dev.sigma_relaxation_S(x * 40e-6, 1.0), 0.0, atol=1e-18)


def test_rram_interpolates_in_log_time_and_holds_outside():
    dev = load_device("rram-wan2022")
    g = np.array([0.3, 0.6, 0.9]) * 40e-6
    x = g / 40e-6
    mid = math.sqrt(1.0 * 86400.0)  # geometric midpoint: halfway in ln t
    expect = 0.5 * (wan_sigma_uS(x, 1.0) + wan_sigma_uS(x, 86400.0))
    np.testing.assert_allclose(dev.sigma_total_relaxation_S(g, mid), 1e-6 * expect, rtol=1e-12)
    np.testing.assert_allclose(dev.sigma_total_relaxation_S(g, 0.01), 1e-6 * wan_sigma_uS(x, 1.0), rtol=1e-12)
    np.testing.assert_allclose(dev.sigma_total_relaxation_S(g, 10 * 365 * 86400.0),
                               1e-6 * wan_sigma_uS(x, 172800.0), rtol=1e-12)


def test_noise_scales_with_g_max(card_text):
    text = card_text().replace("g_max_S = 25e-6", "g_max_S = 50e-6")
    dev = parse_card(text, "scaled")
    # σ scales by g_max / 25 µS at the same relative conductance
    assert dev.sigma_program_S(25e-6) == pytest.approx(2 * 0.952705e-6, rel=1e-6)


@pytest.mark.parametrize(
    "old, new, field",
    [
        ("coefficients_uS = [0.26348, 1.9650, -1.1731]", "", "[programming].coefficients_uS: missing"),
        ("coefficients_uS = [0.26348, 1.9650, -1.1731]", 'coefficients_uS = "abc"', "[programming].coefficients_uS"),
        ("coefficients_uS = [0.26348, 1.9650, -1.1731]", "coefficients_uS = [-1.0, 0.5]", "negative standard deviation"),
        ("t0_s = 20.0", "t0_s = -1.0", "[drift].t0_s"),
        ("t0_s = 20.0", "t0_s = nan", "[drift].t0_s: must be finite"),
        ('model = "pcm-1/f"', 'model = "pink"', "[read_noise].model"),
        ("g_max_S = 25e-6", "g_max_S = 0.0", "[range].g_max_S"),
        ("p_stuck_low = 0.0", "p_stuck_low = 1.5", "[faults].p_stuck_low"),
        ("p_stuck_low = 0.0", "p_stuck_low = 0.7\np_stuck_hgh = 0.0", "unknown field(s) p_stuck_hgh"),
        ("p_stuck_high = 0.0", "p_stuck_high = 0.6\np_stuck_low = 0.6", None),  # duplicate key: invalid TOML
        ("schema_version = 1", "schema_version = 7", "[card].schema_version"),
        ('input = "conductance"', 'input = "colour"', "[card].input"),
        ("q_max = 0.2", "", "[read_noise].q_max: missing"),
        ("mu = { slope = -0.0155, intercept = 0.0244, min = 0.049, max = 0.1 }",
         "mu = { slope = -0.0155, intercept = 0.0244, min = 0.2, max = 0.1 }", "[drift.mu]: min 0.2 > max 0.1"),
    ],
)
def test_malformed_card_names_the_field(card_text, old, new, field):
    text = card_text()
    assert old in text
    with pytest.raises(DeviceCardError) as info:
        parse_card(text.replace(old, new), "bad.toml")
    msg = str(info.value)
    assert "bad.toml" in msg
    if field is not None:
        assert field in msg
    else:
        assert "not valid TOML" in msg


def test_relaxation_table_shape_is_checked(card_text):
    text = card_text("rram-wan2022").replace("times_s = [1.0, 86400.0, 172800.0]", "times_s = [1.0, 86400.0]")
    with pytest.raises(DeviceCardError, match=r"\[relaxation\]\.coefficients_uS: expected one coefficient list"):
        parse_card(text, "r.toml")
    text = card_text("rram-wan2022").replace("times_s = [1.0, 86400.0, 172800.0]", "times_s = [1.0, 1.0, 172800.0]")
    with pytest.raises(DeviceCardError, match="strictly increasing"):
        parse_card(text, "r.toml")


def test_missing_table_and_unknown_name(card_text, tmp_path):
    text = card_text()
    cut = text[: text.index("[faults]")]
    with pytest.raises(DeviceCardError, match=r"\[faults\]: missing required field"):
        parse_card(cut, "cut.toml")
    with pytest.raises(DeviceCardError, match="no bundled device card named 'pcm-nope'"):
        load_device("pcm-nope")
    with pytest.raises(DeviceCardError, match="cannot read"):
        load_device(tmp_path / "absent.toml")


def test_device_card_error_is_a_value_error():
    assert issubclass(DeviceCardError, ValueError) and issubclass(DeviceCardError, analogmem.AnalogMemError)

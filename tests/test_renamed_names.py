"""The three "channel" classes carry one name each (ReadChannel, EmpiricalWriteChannel,
WriteChannelCalibrator); the old public names still import, warn, and are the same class."""

import importlib

import pytest


@pytest.mark.parametrize("module, old, new", [
    ("analogmem.storage", "Channel", "ReadChannel"),
    ("analogmem.storage.encoders", "Channel", "ReadChannel"),
    ("analogmem.emulator.cells", "EmpiricalChannel", "EmpiricalWriteChannel"),
    ("analogmem.calibrate", "ChannelCalibrator", "WriteChannelCalibrator"),
    ("analogmem.calibrate.channel", "ChannelCalibrator", "WriteChannelCalibrator"),
])
def test_old_name_warns_and_is_the_new_class(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=new):
        cls = getattr(mod, old)
    assert cls is getattr(mod, new)
    assert old not in getattr(mod, "__all__", ())


def test_unknown_name_is_still_an_attribute_error():
    import analogmem.calibrate
    import analogmem.storage

    for mod in (analogmem.storage, analogmem.calibrate):
        with pytest.raises(AttributeError, match="NoSuchName"):
            getattr(mod, "NoSuchName")


def test_device_model_relative_warns_and_is_the_fraction_of_g_max():
    import numpy as np

    from analogmem import load_device

    card = load_device("pcm-nandakumar2019")
    g = np.array([1e-6, 5e-6, 20e-6])
    with pytest.warns(DeprecationWarning, match="fraction_of_g_max"):
        x = card.relative(g)
    assert np.array_equal(x, card.fraction_of_g_max(g))

import pytest

from vfakefs.model.pci.bdf import Bdf


def test_parse_and_print():
    b = Bdf.from_str("0000:03:10.2")
    assert (b.domain, b.bus, b.dev, b.fn) == (0, 3, 0x10, 2)
    assert str(b) == "0000:03:10.2"
    assert Bdf.from_str("03:00.1") == Bdf(0, 3, 0, 1)
    assert b.short() == "03:10.2"


@pytest.mark.parametrize("text", ["", "0000:03:00", "0000:03:20.0", "0000:03:00.8", "x:03:00.0", "00000:03:00.0"])
def test_malformed(text):
    with pytest.raises(ValueError):
        Bdf.from_str(text)


def test_vf_routing_ids():
    pf = Bdf.from_str("0000:03:00.0")
    # X540: offset 128, stride 2 -> 03:10.0, 03:10.2, 03:10.4 ...
    assert [str(Bdf.from_rid(0, pf.vf_rid(128, 2, i))) for i in range(4)] == \
        ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"]
    # a sum past devfn 255 carries into the next bus
    assert str(Bdf.from_rid(0, pf.vf_rid(128, 2, 64))) == "0000:04:00.0"


def test_hash_made_once_is_the_address_tuple_hash():
    """A Bdf keeps its hash after the first: equal addresses hash equal, and the value is the
    one the dataclass would compute (sets of addresses iterate in the same order as before)."""
    a, b = Bdf(0, 1, 2, 3), Bdf.from_str("0000:01:02.3")
    assert hash(a) == hash(b) == hash(a) == hash((0, 1, 2, 3))
    assert {a: "x"}[b] == "x" and len({a, b, Bdf(0, 1, 2, 4)}) == 2

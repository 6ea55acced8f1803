"""Every `.pt` and `.optim` we write opens in a stock A1111 with its safe unpickling on.

A1111's safe loader, as documented (docs/file-format.md) and written out here from that
description, not from our code: (1) every entry of a zip-format torch file must be named
`<root>/data.pkl`, `<root>/data/<digits>`, `<root>/version`, `<root>/byteorder` or
`<root>/.data/serialization_id`, with `<root>` a single path segment; (2) the pickle may name only
OrderedDict, torch's tensor/parameter rebuild helpers, the Float/Half/Int/Long/Double/Byte/BFloat16
storages, torch.float32, numpy's scalar/dtype/ndarray reconstruction, _codecs.encode and set.
The same files must still load with torch.load(weights_only=True) on current torch."""
import io
import pickle
import re
import zipfile

import pytest
import torch

from hypernet_studio.hypernet.file_format import convert_hypernetwork_file, load_hypernetwork, save_hypernetwork
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.resume_files import write_optimizer_state

ALLOWED_ENTRY = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|(\.data/serialization_id)|(data\.pkl))$")
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "IntStorage"), ("torch", "LongStorage"),
    ("torch", "DoubleStorage"), ("torch", "ByteStorage"), ("torch", "BFloat16Storage"), ("torch", "float32"),
    ("numpy.core.multiarray", "scalar"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("_codecs", "encode"), ("builtins", "set"),
}


class _A1111StyleUnpickler(pickle.Unpickler):
    """Step 2: refuses any global outside the list; storages are stood in for (names are what counts)."""

    def find_class(self, module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")
        if (module, name) in {("collections", "OrderedDict"), ("builtins", "set")}:
            return super().find_class(module, name)
        return lambda *args, **kwargs: None

    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return None


def assert_a1111_opens(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        bad = [name for name in names if not ALLOWED_ENTRY.match(name)]
        assert not bad, f"A1111 refuses {path.name}: bad file inside it: {bad}"
        pickle_name = next(name for name in names if name.endswith("/data.pkl"))
        _A1111StyleUnpickler(io.BytesIO(archive.read(pickle_name))).load()
    torch.load(path, weights_only=True)
    torch.load(path, weights_only=True, mmap=True)  # tensor data stays aligned


SPECS = [HypernetSpec(sizes=[8, 4]),
         HypernetSpec(layer_structure="1, 1.5, 2, 1", activation="mish", layer_norm=True,
                      dropout_structure=[0, 0.1, 0.2, 0], activate_output=True, sizes=[8]),
         HypernetSpec(activation="swish", weight_init="KaimingUniform", sizes=[16, 8])]


@pytest.mark.parametrize("spec", SPECS, ids=["plain", "deep-ln-dropout", "swish"])
def test_pt_files_open_in_a1111_and_in_torch(tmp_path, spec):
    hn = Hypernetwork.build(spec, seed=0, name="net")
    path = save_hypernetwork(hn, tmp_path / "net.pt")
    assert_a1111_opens(path)
    assert load_hypernetwork(path).sizes == spec.sizes


def test_optimizer_state_files_open_in_a1111(tmp_path):
    hn = Hypernetwork.build(HypernetSpec(sizes=[8]), seed=0)
    path = save_hypernetwork(hn, tmp_path / "net.pt")
    optimizer = torch.optim.AdamW(list(hn.parameters()), lr=1e-3)
    sum(p.sum() for p in hn.parameters()).backward()
    optimizer.step()
    assert_a1111_opens(write_optimizer_state(path, optimizer))


def test_files_converted_from_safetensors_open_in_a1111(tmp_path):
    hn = Hypernetwork.build(HypernetSpec(layer_norm=True, sizes=[8]), seed=1, name="net")
    source = save_hypernetwork(hn, tmp_path / "net.safetensors")
    converted = convert_hypernetwork_file(source, tmp_path / "net.pt")
    assert_a1111_opens(converted)


def test_a_plain_torch_save_is_what_a1111_refuses(tmp_path):
    """The rule above is the one that matters: torch's own writer breaks it."""
    torch.save({768: (torch.zeros(2),)}, tmp_path / "plain.pt")
    names = zipfile.ZipFile(tmp_path / "plain.pt").namelist()
    assert [name for name in names if not ALLOWED_ENTRY.match(name)], "this torch no longer adds extra entries"

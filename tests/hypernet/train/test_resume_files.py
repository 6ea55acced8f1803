"""The `.optim` file: A1111's keys, the hash that ties it to its `.pt`, stale states ignored."""
import torch

from hypernet_studio.hypernet.file_format import save_hypernetwork, shorthash
from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.resume_files import read_optimizer_state, write_optimizer_state


def test_optimizer_state_file(tmp_path):
    hn = Hypernetwork.build(HypernetSpec(sizes=[4]), seed=0)
    path = save_hypernetwork(hn, tmp_path / "o.pt")
    assert read_optimizer_state(path) is None
    optimizer = torch.optim.AdamW(list(hn.parameters()), lr=1e-3)
    sum(p.sum() for p in hn.parameters()).backward()
    optimizer.step()
    optim_path = write_optimizer_state(path, optimizer)
    assert optim_path.name == "o.pt.optim"
    raw = torch.load(optim_path, weights_only=True)
    assert list(raw) == ["optimizer_name", "hash", "optimizer_state_dict"]
    assert raw["hash"] == shorthash(path) and len(raw["hash"]) == 10
    loaded = read_optimizer_state(path)
    assert loaded["optimizer_name"] == "AdamW"
    torch.optim.AdamW(list(hn.parameters()), lr=1e-3).load_state_dict(loaded["optimizer_state_dict"])
    save_hypernetwork(Hypernetwork.build(HypernetSpec(sizes=[4]), seed=1), path)  # file changed: state is stale
    assert read_optimizer_state(path) is None

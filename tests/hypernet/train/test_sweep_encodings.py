"""The runs of a sweep share one encoding of the pictures (prepared_run.SweepEncodings), and only
runs whose settings, seed, pictures and backend are the same take it over."""
from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.config import TrainConfig
from hypernet_studio.hypernet.train.prepared_run import SweepEncodings
from hypernet_studio.hypernet.train.run import TrainingRun

from .fakes import FakeBackend, tiny_dataset
from .test_run import _network


def _prepared(backend, examples, shared, **overrides):
    values = dict(name="net", steps=2, learning_rate="0.001", seed=7, latent_sampling="once", save_every=0,
                  preview_every=0, templates=["[filewords]"], validation_split=0.25)
    values.update(overrides)
    run = TrainingRun(backend, _network(), examples, TrainConfig(**values), shared=shared)
    return run.prepare()


def test_a_later_run_with_the_same_settings_takes_the_pictures_as_encoded():
    backend, shared = FakeBackend(), SweepEncodings()
    examples = prepare_examples(*tiny_dataset(4), None, resolution=16, multiple=8)
    first = _prepared(backend, examples, shared)
    assert backend.encoded_images == 4, "3 trained on, 1 held out"
    second = _prepared(backend, examples, shared, run_name="net-other")  # another run's own files
    assert backend.encoded_images == 4 and second.latents is first.latents and second.validator is first.validator
    assert second.texts is first.texts and [e.caption for e in second.examples] == [e.caption for e in first.examples]


def test_other_settings_a_new_seed_or_other_pictures_encode_again():
    backend, shared = FakeBackend(), SweepEncodings()
    images, captions = tiny_dataset(4)
    first = _prepared(backend, prepare_examples(images, captions, None, resolution=16, multiple=8), shared)
    for overrides in ({"seed": 8}, {"latent_sampling": "deterministic"}):
        examples = prepare_examples(images, captions, None, resolution=16, multiple=8)  # pixels still there
        before = backend.encoded_images
        later = _prepared(backend, examples, shared, **overrides)
        assert backend.encoded_images == before + 4 and later.latents is not first.latents, overrides
    other_pictures = prepare_examples(images, captions, None, resolution=16, multiple=8)
    before = backend.encoded_images
    _prepared(backend, other_pictures, shared, latent_sampling="deterministic")  # as the last, but new pictures
    assert backend.encoded_images == before + 4

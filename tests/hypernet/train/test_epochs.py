"""Issue 18 item 4: what `steps` means for the set (pictures, images per step, epochs), shown
before training starts. Each expected figure is worked out by hand in the test."""
import numpy as np
from PIL import Image

from hypernet_studio.hypernet.preprocess.pipeline import load_folder_lists
from hypernet_studio.hypernet.train.batches import BatchPlan, prepare_examples
from hypernet_studio.hypernet.train.config import TrainHooks
from hypernet_studio.hypernet.train.epochs import epoch_figures
from hypernet_studio.hypernet.train.run import train_hypernetwork

from .fakes import FakeBackend
from .test_run import _config, _examples, _network

SQUARE = (64, 64)


def test_batch_2_accumulation_3_on_2_processes_after_a_validation_split():
    # 30 pictures, 3 held out: 27 trained on. Global batch 2 x 2 = 4 -> 6 batches; 6 is a multiple
    # of the accumulation 3 -> 2 steps per epoch of 12 images (3 of the 27 wait for the next epoch).
    plan = BatchPlan([SQUARE] * 27, batch_size=2 * 2, accumulation=3, seed=0)
    figures = epoch_figures(plan, processes=2, held_out=3, steps=1000)
    assert (figures.pictures, figures.images_per_step, figures.steps_per_epoch) == (27, 12, 2)
    assert figures.epochs == 500 and figures.epochs_to_train == 500
    assert figures.line() == ("27 pictures (3 held out for validation); 12 images per step (batch 2 x "
                              "accumulation 3 x 2 processes); 2 steps per epoch; 1000 steps = 500 epochs")


def test_a_resumed_run_also_says_the_epochs_still_to_train():
    # 40 pictures, batch 4, no accumulation: 10 steps per epoch; 15,000 steps = 1,500 epochs, 11,000 to go.
    figures = epoch_figures(BatchPlan([SQUARE] * 40, 4, 1, seed=0), processes=1, held_out=0, steps=15000,
                            start_step=4000)
    assert figures.epochs == 1500 and figures.epochs_to_train == 1100
    assert figures.line() == ("40 pictures; 4 images per step (batch 4 x accumulation 1); 10 steps per epoch; "
                              "15000 steps = 1,500 epochs; from step 4000, 11000 steps to train = 1,100 epochs")


def test_a_set_smaller_than_the_batch_shows_the_batch_the_plan_uses():
    # 3 pictures, batch 2 on 2 processes: the plan cuts the global batch to 3 and accumulation 4 to 1.
    figures = epoch_figures(BatchPlan([SQUARE] * 3, 2 * 2, 4, seed=0), processes=2, held_out=0, steps=10)
    assert (figures.images_per_step, figures.steps_per_epoch, figures.epochs) == (3, 1, 10)
    assert "3 images per step (batch 3 shared by 2 processes x accumulation 1)" in figures.line()


def test_kohya_repeats_count_as_pictures_as_the_dataset_lists_them(tmp_path):
    # 2 pictures in 3_style (3 repeats each) and 1 at the top: 7 pictures. Batch 2 -> 3 batches,
    # accumulation 1 -> 3 steps per epoch; 10 steps = 3.33 epochs.
    (tmp_path / "3_style").mkdir()
    for path in (tmp_path / "3_style" / "a.png", tmp_path / "3_style" / "b.png", tmp_path / "top.png"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    lists = load_folder_lists(tmp_path, use_kohya_repeats=True)
    examples = prepare_examples(lists.images, lists.captions, resolution=16, multiple=8)
    figures = epoch_figures(BatchPlan([e.size for e in examples], 2, 1, seed=0), 1, 0, steps=10)
    assert (figures.pictures, figures.images_per_step, figures.steps_per_epoch) == (7, 2, 3)
    assert figures.line().endswith("10 steps = 3.33 epochs")


def test_a_run_tells_its_hooks_the_figures_after_the_split_and_before_encoding():
    backend = FakeBackend()
    told = []

    class Hooks(TrainHooks):
        def on_epochs(self, figures):
            told.append((figures, backend.encoded_images))

    # 10 pictures, validation_split 0.2 -> 2 held out, 8 trained on; batch 2 x accumulation 2 -> 2 steps per epoch.
    result = train_hypernetwork(backend, _network(), _examples(10), _config(steps=3, validation_split=0.2,
                                                                             batch_size=2, gradient_accumulation=2),
                                Hooks())
    [(figures, encoded_then)] = told
    assert encoded_then == 0, "told before any picture is encoded"
    assert (figures.pictures, figures.held_out, figures.images_per_step, figures.steps_per_epoch) == (8, 2, 4, 2)
    assert figures.line().endswith("3 steps = 1.5 epochs") and result.epochs == figures

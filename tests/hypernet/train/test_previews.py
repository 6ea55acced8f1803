"""The preview grid's labels: the prompts asked for (long ones shortened) and the seeds."""
from hypernet_studio.hypernet.train.previews import PROMPT_LABEL_CHARS, preview_labels


def test_labels_are_the_prompts_and_seeds():
    rows, columns = preview_labels(["a cat", "a  dog\non grass"], [7, 123456789])
    assert rows == ["a cat", "a dog on grass"] and columns == ["seed 7", "seed 123456789"]


def test_a_long_prompt_is_shortened_with_an_ellipsis():
    prompt = "masterpiece, " * 20
    (row,), _ = preview_labels([prompt], [0])
    assert len(row) == PROMPT_LABEL_CHARS and row.endswith("\u2026")
    assert prompt.startswith(row[:-1])

"""Caption curation over the dataset lists: Tag Statistics, Edit Tags, Filter by Tags.

They take the same parallel lists as the other dataset nodes (nodes/dataset.py); the work is in
hypernet/preprocess (tag_syntax, tag_stats, tag_rules, tag_filter). Rules and expressions are
checked at queue time, with the line or position of a mistake. docs/captions.md has the syntax."""
from __future__ import annotations

import uuid

from ..hypernet.errors import InputError
from ..hypernet.input_values import single_value
from ..hypernet.preprocess.tag_filter import parse_expression
from ..hypernet.preprocess.tag_rules import parse_rules
from ..hypernet.preprocess.tag_stats import TOP_N_DEFAULT
from .dataset import CATEGORY, IMAGES_IN, OPTIONAL_LISTS
from .host import HOST
from .widgets import Node, integer, mappings, socket, text, validation

CAPTIONS_IN = socket("STRING", forceInput=True, tooltip="Captions, one per picture (tags separated by ', ').")
LIST_NAMES = ("images", "masks", "captions", "stems")
RULES_EXAMPLE = """# One rule per line, applied in order (docs/captions.md). For example:
# remove: watermark, text, signature
# replace: 1girl -> woman
# regex: ^(.*) hair$ -> \\1-hair
# prepend: mystyle
dedupe
"""


def _csv_path(csv_file):
    """Where the CSV goes under the output folder (None for no CSV); '..' and absolute refused."""
    from ..hypernet.files import UnsafePathError, safe_join

    name = (csv_file or "").strip()
    if not name:
        return None
    try:
        return safe_join(HOST.output_directory(), name if name.lower().endswith(".csv") else name + ".csv")
    except UnsafePathError as exc:
        raise InputError("csv_file", str(exc)) from None


def _preview(image) -> dict:
    """A ui.images entry for `image`, written as a PNG to the temp folder (as Preview Image does)."""
    from ..hypernet.files import atomic_path
    from ..hypernet.images import image_tensor_to_pil

    folder = HOST.temp_directory()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"hn_tag_stats_{uuid.uuid4().hex[:12]}.png"
    with atomic_path(folder / name) as tmp:
        image_tensor_to_pil(image).save(tmp, format="PNG")
    return {"filename": name, "subfolder": "", "type": "temp"}


def tag_statistics_outputs(captions: list, top_n: int, csv_file: str) -> dict:
    """The table and chart (shown on the node and returned), and the CSV if one is asked for."""
    from ..hypernet.files import atomic_write_text
    from ..hypernet.preprocess import tag_stats

    stats = tag_stats.tag_statistics(captions)
    table, chart = tag_stats.stats_table(stats, top_n), tag_stats.tag_chart(stats, top_n)
    lines = [table, *(f"warning: {line}" for line in tag_stats.stats_warnings(stats))]
    path = _csv_path(csv_file)
    if path is not None:
        atomic_write_text(path, tag_stats.stats_csv(stats))
        HOST.wrote(path)
        lines.append(f"wrote every tag to {path}")
    return {"ui": {"text": lines, "images": [_preview(chart)]}, "result": ("\n".join(lines), chart)}


class TagStatsNode(Node):
    """Count the tags of a caption list: a table of tag, count and share of pictures (top N), the
    distinct tags and tags per caption, a bar chart, and a CSV of every tag under the output
    folder. Warns about tags in every caption, repeated tags and captions over 75 CLIP tokens."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_TagStats", "Tag Statistics", CATEGORY, "count"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("table", "chart")
    INPUT_IS_LIST = True
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "captions": CAPTIONS_IN,
            "top_n": integer(default=TOP_N_DEFAULT, min=1, max=1000, tooltip="Tags in the table and the chart."),
            "csv_file": text(default="tag_stats.csv", tooltip="CSV of every tag (tag, count, share) under the output "
                                                              "folder ('..' and absolute refused); empty = none."),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, csv_file):
        return validation(lambda: _csv_path(single_value(csv_file)))

    def count(self, captions, top_n, csv_file):
        return tag_statistics_outputs(list(captions), single_value(top_n), single_value(csv_file))


class EditTagsNode(Node):
    """Edit every caption with rules, one per line, in order: remove, replace (a -> b), regex,
    prepend, append, keep_first N, dedupe, sort: alpha|count. Images, masks and stems pass
    through unchanged; a caption no rule changes stays exactly as it was."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_EditTags", "Edit Tags", CATEGORY, "edit"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING", "STRING")
    RETURN_NAMES = (*LIST_NAMES, "summary")
    OUTPUT_IS_LIST = (True, True, True, True, False)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "captions": CAPTIONS_IN,
            "rules": text(default=RULES_EXAMPLE, multiline=True, tooltip="One rule per line; # starts a comment. "
                                                                       "Checked at queue time."),
        }, "optional": {"images": IMAGES_IN, "masks": OPTIONAL_LISTS["masks"], "stems": OPTIONAL_LISTS["stems"]}}

    @classmethod
    def VALIDATE_INPUTS(cls, rules):
        return validation(lambda: rules is None or parse_rules(single_value(rules)))

    def edit(self, captions, rules, images=None, masks=None, stems=None):
        from ..hypernet.preprocess.tag_rules import apply_rules

        result = apply_rules(list(captions), parse_rules(single_value(rules)))
        lines = [*result.summary, *(f"warning: {line}" for line in result.warnings)]
        return {"ui": {"text": lines or ["no rules"]},
                "result": (images or [], masks or [], result.captions, stems or [], "\n".join(lines))}


def filter_outputs(images, captions, masks, stems, expression_text: str) -> dict:
    """Kept and dropped lists (masks filled where missing) and the counts for the node."""
    from ..hypernet.preprocess.lists import DatasetLists
    from ..hypernet.preprocess.pipeline import align_dataset_inputs, fill_missing_masks
    from ..hypernet.preprocess.tag_filter import split_by_tags, unknown_names

    expression = parse_expression(expression_text)
    items, caption_items, mask_items, stem_items = align_dataset_inputs(images, captions, masks, stems)
    kept, dropped = split_by_tags(DatasetLists(items, mask_items, caption_items, stem_items), expression)
    lines = [f"kept {len(kept.images)} of {len(items)} pictures, dropped {len(dropped.images)}"]
    unknown = unknown_names(expression, caption_items)
    if unknown:
        lines.append(f"no caption has {', '.join(unknown)}: such a name matches nothing")
    result = tuple(value for lists in (kept, dropped) for value in (
        lists.images, fill_missing_masks(lists.images, lists.masks), lists.captions, lists.stems))
    return {"ui": {"text": lines}, "result": result}


class FilterByTagsNode(Node):
    """Split the pictures by an expression over their caption's tags (AND, OR, NOT, parentheses,
    e.g. NOT (text OR watermark)): the pictures it matches and the others come out as two sets of
    parallel lists (wire the dropped ones into a second Save Dataset to review them)."""

    NODE_ID, DISPLAY_NAME, CATEGORY, FUNCTION = "HN_FilterByTags", "Filter by Tags", CATEGORY, "split"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "STRING") * 2
    RETURN_NAMES = (*LIST_NAMES, *(f"dropped_{name}" for name in LIST_NAMES))
    OUTPUT_IS_LIST = (True,) * 8
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        expression = text(default="NOT (text OR watermark OR signature)", tooltip="Pictures to keep: tag names with "
                          "AND, OR, NOT and parentheses; empty keeps all. Checked at queue time.")
        return {"required": {"images": IMAGES_IN, "captions": CAPTIONS_IN, "expression": expression},
                "optional": {"masks": OPTIONAL_LISTS["masks"], "stems": OPTIONAL_LISTS["stems"]}}

    @classmethod
    def VALIDATE_INPUTS(cls, expression):
        return validation(lambda: expression is None or parse_expression(single_value(expression)))

    def split(self, images, captions, expression, masks=None, stems=None):
        return filter_outputs(images, list(captions), masks, stems, single_value(expression))


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings([TagStatsNode, EditTagsNode, FilterByTagsNode])

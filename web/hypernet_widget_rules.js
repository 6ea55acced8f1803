// Which of Train Hypernet's widgets the current choices make irrelevant: pure logic, no DOM, no
// ComfyUI imports, no side effects at import time, so node:test can exercise it (tests/web/).
// The glue that hides and shows them in the editor is train_widgets.js.
//
// A rule hides its widgets unless `shown(values, linked)` holds. A widget whose value cannot
// fail the node's checks while hidden is the only kind a rule may hide: check_text_inputs in
// nodes/train.py checks min_learning_rate and warmup_steps for every scheduler but a1111, so
// they show for every scheduler but a1111. When a rule's controlling input is fed by a link, its
// value is unknown here, so the rule's widgets show.

export const TRAIN_NODE = "HN_TrainHypernet";

export const RULES = [
  {
    why: "the a1111 scheduler follows the learning_rate schedule string",
    controls: ["lr_scheduler"],
    widgets: ["warmup_steps", "min_learning_rate"],
    shown: (v) => v.lr_scheduler !== "a1111",
  },
  {
    why: "only cosine_with_restarts has cycles",
    controls: ["lr_scheduler"],
    widgets: ["restart_cycle_steps", "restart_cycle_mult"],
    shown: (v) => v.lr_scheduler === "cosine_with_restarts",
  },
  {
    why: "only prompt_template 'custom' reads custom_template",
    controls: ["prompt_template"],
    widgets: ["custom_template"],
    shown: (v) => v.prompt_template === "custom",
  },
  {
    why: "clipping is off",
    controls: ["clip_grad_mode"],
    widgets: ["clip_grad_value"],
    shown: (v) => v.clip_grad_mode !== "disabled",
  },
  {
    why: "validation is off: no validation_split and no validation_images linked",
    controls: ["validation_split", "validation_images"],
    widgets: ["validation_every"],
    shown: (v, linked) => linked.has("validation_images") || Number(v.validation_split) > 0,
  },
];

/** Every input a rule reads: a change to one of these re-applies the rules. */
export const CONTROLS = new Set(RULES.flatMap((rule) => rule.controls));

/** The names of the widgets to hide, given the widget values ({name: value}) and the names of
 * the inputs that have a link. */
export function hiddenWidgetNames(values, linked = new Set()) {
  const hidden = new Set();
  for (const rule of RULES) {
    const unknown = rule.controls.some((name) => linked.has(name) && name in values);
    if (!unknown && !rule.shown(values, linked)) for (const name of rule.widgets) hidden.add(name);
  }
  return hidden;
}

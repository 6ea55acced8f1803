// node --test tests/web/ : which Train Hypernet widgets web/hypernet_widget_rules.js hides.
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const source = readFileSync(new URL("../../web/hypernet_widget_rules.js", import.meta.url), "utf8");
const rules = await import("data:text/javascript," + encodeURIComponent(source));
// What the node's widgets hold by default (TrainConfig's defaults).
const DEFAULTS = { lr_scheduler: "a1111", prompt_template: "style_filewords", clip_grad_mode: "disabled",
  validation_split: 0, warmup_steps: 0, min_learning_rate: 0, restart_cycle_steps: 0, restart_cycle_mult: 1,
  custom_template: "", clip_grad_value: "0.1", validation_every: 100 };
const hidden = (changes = {}, linked = []) =>
  [...rules.hiddenWidgetNames({ ...DEFAULTS, ...changes }, new Set(linked))].sort();

test("the defaults hide every widget they make irrelevant", () => {
  assert.deepEqual(hidden(), ["clip_grad_value", "custom_template", "min_learning_rate", "restart_cycle_mult",
    "restart_cycle_steps", "validation_every", "warmup_steps"]);
});

test("scheduler widgets show for the schedulers that read them", () => {
  const schedulerOnly = ["min_learning_rate", "restart_cycle_mult", "restart_cycle_steps", "warmup_steps"];
  const shown = (scheduler) => schedulerOnly.filter((name) => !hidden({ lr_scheduler: scheduler }).includes(name));
  assert.deepEqual(shown("a1111"), []);
  assert.deepEqual(shown("cosine"), ["min_learning_rate", "warmup_steps"]);
  assert.deepEqual(shown("linear"), ["min_learning_rate", "warmup_steps"]);
  assert.deepEqual(shown("cosine_with_restarts"), schedulerOnly);
});

test("custom_template shows only for the custom template set", () => {
  assert.ok(hidden({ prompt_template: "subject" }).includes("custom_template"));
  assert.ok(!hidden({ prompt_template: "custom" }).includes("custom_template"));
});

test("validation_every shows with a split or linked validation images", () => {
  assert.ok(hidden({ validation_split: 0 }).includes("validation_every"));
  assert.ok(!hidden({ validation_split: 0.1 }).includes("validation_every"));
  assert.ok(!hidden({}, ["validation_images"]).includes("validation_every"));
});

test("clip_grad_value shows when clipping is on", () => {
  assert.ok(hidden().includes("clip_grad_value"));
  assert.ok(!hidden({ clip_grad_mode: "norm" }).includes("clip_grad_value"));
});

test("a control fed by a link has no known value, so its widgets show", () => {
  assert.ok(!hidden({}, ["lr_scheduler"]).includes("warmup_steps"));
  assert.ok(!hidden({}, ["prompt_template"]).includes("custom_template"));
});

test("every controlling input re-applies the rules; no rule hides a control", () => {
  const controlled = new Set(rules.RULES.flatMap((rule) => rule.widgets));
  for (const name of rules.CONTROLS) assert.ok(!controlled.has(name), name);
  assert.deepEqual([...rules.CONTROLS].sort(), ["clip_grad_mode", "lr_scheduler", "prompt_template",
    "validation_images", "validation_split"]);
});

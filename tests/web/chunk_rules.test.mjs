// node --test tests/web/ : Load Images' chunk control (web/load_images_chunk_rules.js).
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const source = readFileSync(new URL("../../web/load_images_chunk_rules.js", import.meta.url), "utf8");
const rules = await import("data:text/javascript," + encodeURIComponent(source));

function fakeControl() {
  const calls = [];
  return { calls, value: "randomize", beforeQueued() { calls.push("before"); }, afterQueued() { calls.push("after"); } };
}

test("a new node's chunk counts up after each run, not at random", () => {
  const control = rules.chunkControlRules(fakeControl(), () => 100);
  assert.equal(control.value, "increment");
});

test("while chunk_size is 0 the chunk number never moves", () => {
  let size = 0;
  const control = rules.chunkControlRules(fakeControl(), () => size);
  control.beforeQueued();
  control.afterQueued();
  assert.deepEqual(control.calls, []);
  size = 50;
  control.afterQueued();
  assert.deepEqual(control.calls, ["after"]);
});

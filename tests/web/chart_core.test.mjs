// node --test tests/web/ : the pure chart logic of web/hypernet_chart_core.js.
import test from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const source = readFileSync(new URL("../../web/hypernet_chart_core.js", import.meta.url), "utf8");
const core = await import("data:text/javascript," + encodeURIComponent(source));

function recorder() {
  const calls = [];
  const ctx = new Proxy({}, { get: (_, name) => (...args) => calls.push([name, ...args]), set: () => true });
  return { ctx, calls };
}

test("ring buffer keeps the newest points in order", () => {
  const history = new core.LossHistory(3);
  for (let step = 1; step <= 5; step++) history.push({ step, loss: step / 10, lr: 1e-5 });
  assert.deepEqual(history.points().map((p) => p.step), [3, 4, 5]);
  assert.equal(history.last().loss, 0.5);
});

test("a lower step starts a new run", () => {
  const history = new core.LossHistory(10);
  history.push({ step: 7, loss: 1 });
  history.push({ step: 8, loss: 1 });
  history.push({ step: 8, val_loss: 0.9 });
  history.push({ step: 1, loss: 2 });
  assert.deepEqual(history.points().map((p) => p.step), [1]);
  assert.deepEqual(history.validation, []);
  assert.equal(history.push({ step: "x", loss: 1 }), false);
});

test("validation points are kept apart from training points", () => {
  const history = new core.LossHistory(10);
  history.push({ step: 1, loss: 1, lr: 1e-4 });
  history.push({ step: 2, val_loss: 0.8 });
  history.push({ step: 2, loss: 0.9, lr: 1e-4 });
  assert.deepEqual(history.points().map((p) => p.step), [1, 2]);
  assert.deepEqual(history.validation, [{ step: 2, val: 0.8 }]);
});

test("layout maps the extremes to the padded box and drops NaN", () => {
  const { coords, minLoss, maxLoss } = core.layout(
    [{ step: 0, loss: 2 }, { step: 5, loss: NaN }, { step: 10, loss: 1 }], 120, 60, 10);
  assert.deepEqual(coords, [[10, 10], [110, 50]]);
  assert.equal(minLoss, 1);
  assert.equal(maxLoss, 2);
  const rates = core.layout([{ step: 0, lr: 1e-4 }, { step: 10, lr: 0 }], 120, 60, 10, "lr");
  assert.deepEqual(rates.coords, [[10, 10], [110, 50]]);
});

test("smoothing is an EMA that skips non-finite losses", () => {
  const out = core.smooth([{ step: 1, loss: 1 }, { step: 2, loss: Infinity }, { step: 3, loss: 2 }], 0.5);
  assert.deepEqual(out.map((p) => p.loss), [1, 1, 1.5]);
});

test("drawChart draws loss, smoothed loss and the learning rate, and labels the last step", () => {
  const { ctx, calls } = recorder();
  const points = [{ step: 1, loss: 0.5, lr: 1e-5 }, { step: 2, loss: 0.25, lr: 5e-6 }];
  const label = core.drawChart(ctx, points, 200, 100);
  assert.match(label, /^step 2 {2}loss 0\.2500 {2}lr 5\.00e-6/);
  assert.equal(calls.filter((c) => c[0] === "stroke").length, 3);
  assert.equal(core.drawChart(recorder().ctx, [], 200, 100), "waiting for training steps");
});

test("drawChart adds the validation loss as its own line", () => {
  const { ctx, calls } = recorder();
  const points = [1, 2, 3, 4].map((step) => ({ step, loss: 1 / step, lr: 1e-4 }));
  const label = core.drawChart(ctx, points, 200, 100, [{ step: 2, val: 0.7 }, { step: 4, val: 0.6 }]);
  assert.match(label, /val 0\.6000/);
  assert.equal(calls.filter((c) => c[0] === "stroke").length, 4);
});

// Pure loss-chart logic for the Train Hypernet node: no DOM, no ComfyUI imports, no side
// effects at import time, so node:test can exercise it (tests/web/). The glue is train_chart.js.

/** A fixed-capacity history of training steps (and validation points); the oldest fall out first. */
export class LossHistory {
  constructor(capacity = 2000) {
    if (!Number.isInteger(capacity) || capacity < 2) throw new RangeError("capacity must be an integer >= 2");
    this.capacity = capacity;
    this.clear();
  }

  clear() {
    this.items = new Array(this.capacity);
    this.start = 0;
    this.length = 0;
    this.validation = [];
  }

  /** Add {step, loss, lr} or a validation point {step, val_loss}. A step lower than the last one
   * means a new run: start over. */
  push(point) {
    const step = Number(point?.step);
    if (!Number.isFinite(step)) return false;
    const last = this.lastStep();
    if (last !== null && step < last) this.clear();
    if (point && "val_loss" in point) {
      this.validation.push({ step, val: Number(point.val_loss) });
      if (this.validation.length > this.capacity) this.validation.shift();
      return true;
    }
    const entry = { step, loss: Number(point?.loss), lr: Number(point?.lr) };
    if (this.length < this.capacity) {
      this.items[(this.start + this.length) % this.capacity] = entry;
      this.length += 1;
    } else {
      this.items[this.start] = entry;
      this.start = (this.start + 1) % this.capacity;
    }
    return true;
  }

  last() {
    return this.length ? this.items[(this.start + this.length - 1) % this.capacity] : null;
  }

  lastStep() {
    const steps = [this.last()?.step, this.validation.at(-1)?.step].filter((s) => s !== undefined);
    return steps.length ? Math.max(...steps) : null;
  }

  /** The training points, oldest first. */
  points() {
    const out = [];
    for (let i = 0; i < this.length; i++) out.push(this.items[(this.start + i) % this.capacity]);
    return out;
  }
}

/** Exponential moving average of the finite losses (NaN/inf are skipped, not averaged in). */
export function smooth(points, alpha = 0.1) {
  let average = null;
  return points.map((p) => {
    if (Number.isFinite(p.loss)) average = average === null ? p.loss : average + alpha * (p.loss - average);
    return { step: p.step, loss: average };
  });
}

/** Map points to canvas pixels inside a padded box; y grows downwards. Non-finite values are dropped.
 * `key` picks the value ("loss" by default); `range` forces the value and step ranges (shared axes). */
export function layout(points, width, height, padding = 8, key = "loss", range = null) {
  const finite = points.filter((p) => Number.isFinite(p[key]) && p[key] !== null);
  if (!finite.length) return { coords: [], minLoss: null, maxLoss: null, minStep: null, maxStep: null };
  let minLoss = Infinity, maxLoss = -Infinity;
  for (const p of finite) { minLoss = Math.min(minLoss, p[key]); maxLoss = Math.max(maxLoss, p[key]); }
  let minStep = finite[0].step, maxStep = finite[finite.length - 1].step;
  if (range) ({ minLoss, maxLoss, minStep, maxStep } = { ...{ minLoss, maxLoss, minStep, maxStep }, ...range });
  const spanX = maxStep - minStep || 1, spanY = maxLoss - minLoss || 1;
  const w = Math.max(width - 2 * padding, 1), h = Math.max(height - 2 * padding, 1);
  const coords = finite.map((p) => [padding + ((p.step - minStep) / spanX) * w,
                                    padding + (1 - (p[key] - minLoss) / spanY) * h]);
  return { coords, minLoss, maxLoss, minStep, maxStep };
}

/** Draw raw and smoothed loss, the validation loss and (on its own scale) the learning rate on a
 * 2D context; returns the text label it wrote. */
export function drawChart(ctx, points, width, height, validation = []) {
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#1e1e1e";
  ctx.fillRect(0, 0, width, height);
  const val = validation.map((v) => ({ step: v.step, loss: v.val }));
  const raw = layout([...points, ...val].sort((a, b) => a.step - b.step), width, height, 14);
  const shared = { minLoss: raw.minLoss, maxLoss: raw.maxLoss, minStep: raw.minStep, maxStep: raw.maxStep };
  const last = points[points.length - 1];
  const label = raw.coords.length
    ? `step ${last ? last.step : val.at(-1).step}  loss ${fmt(last?.loss)}` +
      (val.length ? `  val ${fmt(val.at(-1).loss)}` : "") + `  lr ${fmt(last?.lr)}  ` +
      `[${fmt(raw.minLoss)} .. ${fmt(raw.maxLoss)}]`
    : "waiting for training steps";
  const series = [[layout(points, width, height, 14, "loss", shared).coords, "rgba(120,160,255,0.45)", []],
                  [layout(smooth(points), width, height, 14, "loss", shared).coords, "#ffb347", []],
                  [layout(val, width, height, 14, "loss", shared).coords, "#ff5c5c", []],
                  [layout(points, width, height, 14, "lr", { minStep: raw.minStep, maxStep: raw.maxStep }).coords,
                   "#7bd389", [4, 3]]];
  for (const [coords, colour, dash] of series) {
    if (coords.length < 2) continue;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.setLineDash?.(dash);
    ctx.beginPath();
    ctx.moveTo(coords[0][0], coords[0][1]);
    for (const [x, y] of coords.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
  ctx.setLineDash?.([]);
  ctx.fillStyle = "#ddd";
  ctx.font = "11px sans-serif";
  ctx.fillText(label, 4, 11);
  ctx.fillText("loss, smoothed, validation (red); lr dashed (own scale)", 4, height - 3);
  return label;
}

function fmt(value) {
  if (!Number.isFinite(value)) return String(value);
  return Math.abs(value) >= 0.01 && Math.abs(value) < 1000 ? value.toFixed(4) : value.toExponential(2);
}

// Live loss chart on the Train Hypernet node, fed by the "hypernet.train_step" event that the
// trainer sends through PromptServer.send_sync: {node, step, loss, lr} after training steps and
// {node, step, val_loss} after each validation.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { LossHistory, drawChart } from "./hypernet_chart_core.js";

const TRAIN_NODE = "HN_TrainHypernet";
const histories = new Map(); // node id (string) -> LossHistory; survives before the widget exists

function historyFor(nodeId) {
  const key = String(nodeId);
  if (!histories.has(key)) histories.set(key, new LossHistory(2000));
  return histories.get(key);
}

function findNode(nodeId) {
  // Unique ids inside subgraphs look like "5:12"; the canvas node is the last part.
  const last = String(nodeId).split(":").pop();
  return app.graph?.getNodeById(Number(last)) ?? app.graph?.getNodeById(last) ?? null;
}

function redraw(node) {
  const canvas = node?.hypernetChartCanvas;
  if (!canvas) return;
  const width = Math.max(Math.floor(canvas.clientWidth || 320), 50);
  const height = Math.max(Math.floor(canvas.clientHeight || 160), 50);
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const history = historyFor(node.id);
  drawChart(canvas.getContext("2d"), history.points(), width, height, history.validation);
}

const CHART_HEIGHT = 170; // px: the chart's own row, so output images are drawn below it, not behind it

function addChartWidget(node) {
  const canvas = document.createElement("canvas");
  canvas.style.width = "100%";
  canvas.style.height = `${CHART_HEIGHT - 10}px`;
  node.hypernetChartCanvas = canvas;
  const widget = node.addDOMWidget("loss_chart", "hypernet_loss_chart", canvas, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => CHART_HEIGHT,
    getMaxHeight: () => CHART_HEIGHT,
  });
  // LGraphNode.serialize() skips a widget by its own `serialize` flag, not the option: without it
  // the chart's "" lands in widgets_values after the node's real values.
  widget.serialize = false;
  requestAnimationFrame(() => redraw(node));
}

app.registerExtension({
  name: "hypernet_studio.TrainChart",
  setup() {
    api.addEventListener("hypernet.train_step", (event) => {
      const data = event.detail ?? {};
      const node = findNode(data.node);
      historyFor(node ? node.id : data.node).push(data);
      if (node) redraw(node);
    });
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== TRAIN_NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addChartWidget(this);
      return result;
    };
    const onResize = nodeType.prototype.onResize;
    nodeType.prototype.onResize = function () {
      const result = onResize?.apply(this, arguments);
      redraw(this);
      return result;
    };
  },
});

// Train Hypernet shows only the widgets its current choices use (the rules and their reasons are
// in hypernet_widget_rules.js). Hiding is display only: the frontend's own `widget.hidden` flag
// makes litegraph skip the widget when drawing, laying out and sizing the node, while the widget,
// its value and its place in widgets_values stay, so a saved workflow keeps every value.
import { app } from "../../scripts/app.js";
import { CONTROLS, TRAIN_NODE, hiddenWidgetNames } from "./hypernet_widget_rules.js";

function widgetValues(node) {
  const values = {};
  for (const widget of node.widgets ?? []) values[widget.name] = widget.value;
  return values;
}

function linkedInputs(node) {
  return new Set((node.inputs ?? []).filter((input) => input.link != null).map((input) => input.name));
}

// fit: resize the node's height to its visible widgets (after the user changes a choice); a loaded
// workflow keeps the size it was saved with.
function applyRules(node, fit) {
  const hidden = hiddenWidgetNames(widgetValues(node), linkedInputs(node));
  let changed = false;
  for (const widget of node.widgets ?? []) {
    const hide = hidden.has(widget.name);
    if (Boolean(widget.hidden) !== hide) changed = true;
    widget.hidden = hide;
    // The Vue node renderer (the opt-in "modern node design") reads the flag from the options.
    if (widget.options) widget.options.hidden = hide;
  }
  if (changed && fit) node.setSize([node.size[0], node.computeSize()[1]]);
  if (changed) node.setDirtyCanvas?.(true, true);
}

function watchControls(node) {
  for (const widget of node.widgets ?? []) {
    if (!CONTROLS.has(widget.name) || widget.hypernetWatched) continue;
    const callback = widget.callback;
    widget.callback = function () {
      const result = callback?.apply(this, arguments);
      applyRules(node, true);
      return result;
    };
    widget.hypernetWatched = true;
  }
}

app.registerExtension({
  name: "hypernet_studio.TrainWidgets",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== TRAIN_NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      watchControls(this);
      applyRules(this, false);
      // A node new from the menu fits its visible widgets once every extension has added its own
      // (the live chart); a loaded one (onConfigure ran by then) keeps its saved size.
      requestAnimationFrame(() => { if (!this.hypernetConfigured) this.setSize([this.size[0], this.computeSize()[1]]); });
      return result;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      this.hypernetConfigured = true;
      applyRules(this, false);
      return result;
    };
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = onConnectionsChange?.apply(this, arguments);
      if (this.widgets) applyRules(this, !app.configuringGraph); // a loading workflow keeps its sizes
      return result;
    };
  },
});

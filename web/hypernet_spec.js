// Shows the Hypernet Spec node's parameter count and file size (its ui.text output) in a
// read-only widget that is not saved with the workflow. The arithmetic lives in Python only.
import { app } from "../../scripts/app.js";

const SPEC_NODE = "HN_HypernetSpec";
const SIZE_TEXT_HEIGHT = 44; // px: two lines of 11 px text and the textarea's padding

function showSizeText(node, text) {
  let widget = node.widgets?.find((w) => w.name === "size_info");
  if (!widget) {
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.rows = 2;
    box.style.cssText = "width:100%;resize:none;opacity:0.85;font-size:11px;";
    widget = node.addDOMWidget("size_info", "hypernet_size_info", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => { box.value = value ?? ""; },
      getMinHeight: () => SIZE_TEXT_HEIGHT,
    });
    widget.hypernetBox = box;
    widget.serialize = false; // LGraphNode.serialize() reads this flag, not the option
    // The widget arrives after the node was sized: grow the node so that the text is not cut off.
    const needed = node.computeSize();
    if (node.size[1] < needed[1]) node.setSize([node.size[0], needed[1]]);
  }
  widget.hypernetBox.value = text;
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "hypernet_studio.HypernetSpec",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== SPEC_NODE) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = Array.isArray(output?.text) ? output.text.join("\n") : String(output?.text ?? "");
      showSizeText(this, text);
    };
  },
});

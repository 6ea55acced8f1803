// Load Images in chunks, in the editor. The `chunk` widget has ComfyUI's "control after generate";
// the frontend would start a new node at "randomize", so a new node starts at "increment": each
// queue run (or each run of a batch count) takes the next chunk. While chunk_size is 0 the folder
// loads whole and the control does nothing: an unused number that changed after every run would
// make ComfyUI run Load Images and everything after it (training included) again. After a run
// the node shows which chunk ran and how many are left (its ui text).
import { app } from "../../scripts/app.js";
import { chunkControlRules } from "./load_images_chunk_rules.js";

const LOAD_IMAGES = "HN_LoadImages";

function showStatus(node, lines) {
  let widget = node.widgets?.find((w) => w.name === "chunk_status");
  if (!widget) {
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.rows = 2;
    box.style.cssText = "width:100%;resize:vertical;opacity:0.85;font-size:11px;font-family:monospace;";
    widget = node.addDOMWidget("chunk_status", "hypernet_chunk_status", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => { box.value = value ?? ""; },
    });
    widget.serialize = false;  // the frontend's serialize() reads the widget's flag, not the option
    widget.hypernetBox = box;
  }
  widget.hypernetBox.value = lines.join("\n");
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "hypernet_studio.LoadImagesChunks",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== LOAD_IMAGES) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const chunk = this.widgets?.find((w) => w.name === "chunk");
      const size = this.widgets?.find((w) => w.name === "chunk_size");
      const control = chunk?.linkedWidgets?.[0];
      if (control && size) chunkControlRules(control, () => size.value);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(output?.chunk) && Array.isArray(output?.text)) showStatus(this, output.text.slice(0, 2));
    };
  },
});

// Shows the text that the caption nodes return (ui.text: Tag Statistics' table and warnings, Edit
// Tags' summary, Filter by Tags' counts) in a read-only box on the node, which is not saved with
// the workflow. ComfyUI shows ui.images (the tag chart) by itself, but not ui.text.
import { app } from "../../scripts/app.js";

const TAG_NODES = ["HN_TagStats", "HN_EditTags", "HN_FilterByTags"];
const ROWS = { HN_TagStats: 14, HN_EditTags: 5, HN_FilterByTags: 3 };

function showText(node, nodeName, text) {
  let widget = node.widgets?.find((w) => w.name === "tag_report");
  if (!widget) {
    const box = document.createElement("textarea");
    box.readOnly = true;
    box.rows = ROWS[nodeName];
    box.style.cssText = "width:100%;resize:vertical;opacity:0.85;font-size:11px;font-family:monospace;white-space:pre;";
    widget = node.addDOMWidget("tag_report", "hypernet_tag_report", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => { box.value = value ?? ""; },
    });
    widget.hypernetBox = box;
  }
  widget.hypernetBox.value = text;
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "hypernet_studio.TagText",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!TAG_NODES.includes(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = Array.isArray(output?.text) ? output.text.join("\n") : String(output?.text ?? "");
      showText(this, nodeData.name, text);
    };
  },
});

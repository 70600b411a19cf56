// ComfyUI-LAMP: show what a LAMP node reports (ui.lamp_warning, ui.text) on the node itself, and warnings also
// as a toast where the frontend offers one. Python side: nodes/host.py:node_result.
import { app } from "../../scripts/app.js";

const WARNING_COLOUR = "#e8b04b";
const TEXT_COLOUR = "#9fc5e8";

function wrap(ctx, text, width) {
  const lines = [];
  for (const paragraph of String(text).split("\n")) {
    let line = "";
    for (const word of paragraph.split(" ")) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && ctx.measureText(candidate).width > width) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

app.registerExtension({
  name: "ComfyUI-LAMP.messages",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.category ?? "").startsWith("LAMP")) return;

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const warnings = output?.lamp_warning ?? [];
      const texts = output?.text ?? [];
      this.lampMessages = [
        ...warnings.map((text) => ({ text: `⚠ ${text}`, colour: WARNING_COLOUR })),
        ...texts.map((text) => ({ text, colour: TEXT_COLOUR })),
      ];
      const toast = app.extensionManager?.toast;
      for (const text of warnings) {
        toast?.add?.({ severity: "warn", summary: nodeData.display_name ?? "LAMP", detail: text, life: 8000 });
      }
      this.setDirtyCanvas?.(true, true);
    };

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (!this.lampMessages?.length || this.flags?.collapsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      let y = this.size[1] + 16;  // just below the node, so no widget is covered
      for (const message of this.lampMessages) {
        ctx.fillStyle = message.colour;
        for (const line of wrap(ctx, message.text, Math.max(this.size[0] - 8, 120))) {
          ctx.fillText(line, 4, y);
          y += 15;
        }
      }
      ctx.restore();
    };
  },
});

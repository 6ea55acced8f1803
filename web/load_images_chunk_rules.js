// The rules of Load Images' chunk control, apart from the editor so node:test can check them
// (tests/web/chunk_rules.test.mjs). `control` is the frontend's "control after generate" widget:
// its value is fixed / increment / decrement / randomize, and the frontend calls its
// beforeQueued / afterQueued hooks around each queued run.

export const NEW_NODE_CONTROL = "increment";

export function chunkControlRules(control, chunkSize) {
  // Set at creation, so a workflow saved with a value (any saved after this pack's chunks) keeps
  // it, and one saved before chunks existed gets "increment" too: harmless while chunk_size is 0.
  control.value = NEW_NODE_CONTROL;
  for (const hook of ["beforeQueued", "afterQueued"]) {
    const original = control[hook];
    if (typeof original !== "function") continue;
    control[hook] = function () {
      if (!(Number(chunkSize()) > 0)) return undefined;  // whole folder: the chunk number stays put
      return original.apply(this, arguments);
    };
  }
  return control;
}

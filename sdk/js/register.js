// `node --import <weir>/sdk/js/register.js --test`: resolve the bare imports
// "weir" and "weir/testing" to this SDK, as the build resolves "weir", so a
// plugin's modules run under plain node with no node_modules. Node 20.6 or
// later (module.register).

import { register } from "node:module";

const sdk = {
  weir: new URL("./weir.js", import.meta.url).href,
  "weir/testing": new URL("./testing.js", import.meta.url).href,
};

const hooks = `
const sdk = ${JSON.stringify(sdk)};
export async function resolve(specifier, context, next) {
  const url = sdk[specifier];
  return url ? { url, format: "module", shortCircuit: true } : next(specifier, context);
}
`;

register(`data:text/javascript,${encodeURIComponent(hooks)}`);

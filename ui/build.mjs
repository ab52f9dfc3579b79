// Builds the review view into one HTML file (script and style inline; nothing from the network):
//   node build.mjs                 -> ../server/cte1_mcp/app/review.html (committed; what the server serves)
//   node build.mjs --out FILE      -> the view to FILE (the test that the committed build is fresh)
//   node build.mjs --host FILE     -> the browser tests' host page (ext-apps' AppBridge) to FILE
// The same sources and the same locked esbuild give the same bytes.
import { readFileSync, writeFileSync, renameSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

async function bundle(entry) {
  const result = await esbuild.build({
    entryPoints: [join(here, entry)],
    bundle: true,
    minify: true,
    format: "esm",
    target: "es2020",
    legalComments: "inline",
    charset: "utf8",
    write: false,
    logLevel: "error",
  });
  return result.outputFiles[0].text;
}

function write(file, text) {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file); // whole or not at all
}

function inline(template, script, style) {
  // "</script" inside the bundle would end the element early
  const safe = script.replace(/<\/script/gi, "<\\/script");
  return template.replace("/*STYLE*/", () => style.trim()).replace("/*SCRIPT*/", () => safe.trim());
}

if (option("--host")) {
  const script = await bundle("harness/host.js");
  write(option("--host"), inline(readFileSync(join(here, "harness/host.html"), "utf8"), script, ""));
} else {
  const css = (await esbuild.transform(readFileSync(join(here, "src/view.css"), "utf8"), { loader: "css", minify: true })).code;
  const html = inline(readFileSync(join(here, "src/review.html"), "utf8"), await bundle("src/view.js"), css);
  const out = option("--out") ?? join(here, "../server/cte1_mcp/app/review.html");
  write(out, html);
  console.log(`${out}: ${Buffer.byteLength(html)} bytes`);
}

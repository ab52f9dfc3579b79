// The browser tests' host: the host side of MCP Apps with ext-apps' AppBridge (the reference
// implementation, wired as its examples/basic-host does). Every tool call and resource read goes to
// the harness server on this page's origin, which makes it over a real MCP client session to the
// real cte1-mcp server (tests/browser_host.py). The view runs in a sandboxed iframe without
// same-origin access, under the CSP hosts apply when a resource declares no domains.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

const harness = (window.harness = { toolCalls: [], log: [], sizes: [] });

async function rpc(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function main() {
  const query = new URLSearchParams(location.search);
  const call = JSON.parse(query.get("call"));
  const tools = await rpc("/tools");
  const tool = tools.find((t) => t.name === "review_call");
  const uri = tool._meta.ui.resourceUri;
  const resource = await rpc(`/resource?uri=${encodeURIComponent(uri)}`);
  harness.resource = { uri, mimeType: resource.mimeType, bytes: new Blob([resource.text]).size };

  const iframe = document.createElement("iframe");
  iframe.id = "app";
  iframe.title = "cte1-mcp review";
  iframe.setAttribute("sandbox", "allow-scripts allow-same-origin");
  const proxyReady = new Promise((resolve) => {
    window.addEventListener("message", function ready(event) {
      if (event.source === iframe.contentWindow && event.data?.method === "ui/notifications/sandbox-proxy-ready") {
        window.removeEventListener("message", ready);
        resolve();
      }
    });
  });
  // the sandbox on another origin: localhost where this page is 127.0.0.1 (the same server)
  iframe.src = `http://localhost:${location.port}/sandbox`;
  document.body.append(iframe);
  await proxyReady;

  let hostContext = {
    theme: query.get("theme") || "light",
    locale: "ja-JP",
    timeZone: "Asia/Tokyo",
    displayMode: "inline",
    availableDisplayModes: ["inline"],
    platform: "web",
    toolInfo: { tool },
    // as hosts send them: light-dark() pairs that follow the theme (the tests check both colours)
    styles: { variables: { "--color-background-primary": "light-dark(#fefefe, #101010)" } },
  };
  // a host that gives the view a size (fixed or at most): ?dimensions={"height":400,"maxWidth":600}
  if (query.get("dimensions")) hostContext.containerDimensions = JSON.parse(query.get("dimensions"));
  const bridge = new AppBridge(
    null,
    { name: "cte1-mcp-test-host", version: "1.0.0" },
    { serverTools: {}, serverResources: {}, logging: {} },
    { hostContext },
  );
  bridge.oncalltool = async (params) => {
    harness.toolCalls.push(params);
    return rpc("/tool", params);
  };
  bridge.onreadresource = async (params) => {
    harness.resourceReads = (harness.resourceReads || 0) + 1;
    return rpc(`/read?uri=${encodeURIComponent(params.uri)}`);
  };
  bridge.onsizechange = ({ width, height }) => {
    harness.log.push(["size", height]);
    harness.sizes.push({ width, height }); // as the view sent them
    if (height) iframe.style.height = `${height}px`;
  };
  bridge.oninitialized = async () => {
    harness.initialized = true;
    bridge.sendToolInput({ arguments: call });
    const result = await rpc("/tool", { name: "review_call", arguments: call });
    harness.reviewResult = result;
    bridge.sendToolResult(result);
  };
  harness.setHostContext = (changes) => bridge.setHostContext((hostContext = { ...hostContext, ...changes }));
  harness.setTheme = (theme) => harness.setHostContext({ theme });
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  await bridge.sendSandboxResourceReady({ html: resource.text });
}

main().catch((error) => {
  harness.error = String(error);
  document.body.append(error.stack || String(error));
});

// The app side of the MCP Apps host protocol (io.modelcontextprotocol/ui, 2026-01-26): JSON-RPC 2.0
// over postMessage with the host window. Hand-written rather than the ext-apps App class: that class
// bundles the MCP client SDK and zod, 403 KB minified at best (measured), over this view's 300 KB
// budget; the view needs only these few messages. The harness host is ext-apps' own AppBridge, so the
// tests check this against the reference implementation.

export const PROTOCOL_VERSION = "2026-01-26";

export class HostConnection {
  constructor(target = window.parent) {
    this.target = target;
    this.nextId = 1;
    this.pending = new Map();
    this.handlers = new Map();
    window.addEventListener("message", (event) => {
      if (event.source !== this.target) return; // only the host speaks to this view
      this.receive(event.data);
    });
  }

  /** Handle a host notification (`ui/notifications/tool-result`, ...). */
  on(method, handler) {
    this.handlers.set(method, handler);
  }

  request(method, params) {
    const id = this.nextId++;
    this.post({ jsonrpc: "2.0", id, method, params });
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  notify(method, params) {
    this.post({ jsonrpc: "2.0", method, params });
  }

  post(message) {
    this.target.postMessage(message, "*");
  }

  receive(message) {
    if (!message || message.jsonrpc !== "2.0") return;
    if (message.method === undefined) {
      const waiting = this.pending.get(message.id);
      if (!waiting) return;
      this.pending.delete(message.id);
      if (message.error) waiting.reject(new Error(message.error.message || "host error"));
      else waiting.resolve(message.result);
      return;
    }
    if (message.id !== undefined) {
      // the host's requests: ping and teardown need only an answer
      const known = message.method === "ping" || message.method === "ui/resource-teardown";
      this.post(
        known
          ? { jsonrpc: "2.0", id: message.id, result: {} }
          : { jsonrpc: "2.0", id: message.id, error: { code: -32601, message: `Method not found: ${message.method}` } },
      );
      return;
    }
    const handler = this.handlers.get(message.method);
    if (handler) handler(message.params || {});
  }

  /** ui/initialize, then ui/notifications/initialized; returns the host's context. */
  async connect(appInfo) {
    const result = await this.request("ui/initialize", {
      appInfo,
      appCapabilities: { availableDisplayModes: ["inline"] },
      protocolVersion: PROTOCOL_VERSION,
    });
    this.notify("ui/notifications/initialized", {});
    return result || {};
  }

  /** A tool of the server, called through the host; resolves to the CallToolResult. */
  callTool(name, args) {
    return this.request("tools/call", { name, arguments: args });
  }
}

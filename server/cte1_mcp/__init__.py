"""cte1-mcp: CT-e1/SaaS call recordings and metadata for MCP clients."""

__version__ = "0.1.0"

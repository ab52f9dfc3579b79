from cte1_mcp.cli import main

main()

"""One module per scenario, each with `NAME` and `async def run(ctx: Context) -> list[Figure]`."""

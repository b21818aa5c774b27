"""emulator: operation GETs per second the emulator command serves (bench.emulator_rps, median of 3 runs)."""

from __future__ import annotations

from bench import emulator_rps
from bench.context import Context
from bench.report import Figure, at_least

NAME = "emulator"
GOAL_RPS = 3000.0


async def run(ctx: Context) -> list[Figure]:
    duration = 2.0 if ctx.quick else 5.0
    result = await emulator_rps.measure(duration, runs=3)
    rps = result["requests_per_second"]
    ctx.share("emulator_rps", rps)
    ctx.note(
        NAME,
        f"raw keep-alive client, 1 process x 32 connections, median of 3 x {duration:g} s "
        f"(min {result['min_requests_per_second']:,.0f}, max {result['max_requests_per_second']:,.0f}); "
        f"emulator CPU {result['emulator_cpu_ms']:.3f} ms/request",
    )
    return [at_least(NAME, "operation GETs/s", rps, GOAL_RPS, "req/s")]

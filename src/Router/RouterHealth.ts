/**
 * Health checks of the local providers (those with a `healthPath`): each check settles the provider's breaker
 * like an attempt would, so a provider that went down is skipped before any request waits on it.
 */
import { Clock, Effect, Exit, Schedule } from "effect"
import { ProviderFailure } from "./Errors.ts"
import { type ProviderState, touch } from "./ProviderBreakers.ts"
import * as Providers from "./Providers.ts"
import type { RouterCore } from "./RouteRequest.ts"

const checkOne = (core: RouterCore, p: ProviderState) =>
  Providers.health(core.client, p.config).pipe(
    Effect.timeoutOrElse({
      duration: core.config.healthCheck?.timeoutMs ?? 2_000,
      orElse: () => Effect.fail(new ProviderFailure({ provider: p.config.name, kind: "timeout", detail: "health check timed out" }))
    }),
    Effect.exit,
    Effect.flatMap((exit) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const up = Exit.isSuccess(exit)
        return touch(core.metrics, p.breaker, (b) => (up ? b.success(now) : b.failure(now))).pipe(
          Effect.andThen(core.metrics.health(p.config.name, up)),
          Effect.andThen(up ? Effect.void : Effect.logWarning("health check failed", { provider: p.config.name })),
          Effect.as([p.config.name, up] as const)
        )
      })
    )
  )

/**
 * One check of every local provider now (provider name -> up), and the schedule that repeats it in the caller's
 * scope when the config asks for one.
 */
export const makeHealthCheck = (core: RouterCore) => {
  const targets = [...core.providers.values()].filter((p) => p.config.local && p.config.healthPath !== undefined)
  const checkHealth: Effect.Effect<Readonly<Record<string, boolean>>> = Effect.map(
    Effect.forEach(targets, (p) => checkOne(core, p), { concurrency: "unbounded" }),
    (pairs) => Object.fromEntries(pairs)
  ).pipe(Effect.withSpan("ModelRouter.checkHealth"))
  const { healthCheck } = core.config
  const schedule = healthCheck !== undefined && targets.length > 0
    ? Effect.asVoid(checkHealth.pipe(
      Effect.repeat(Schedule.spaced(healthCheck.intervalMs)),
      Effect.delay(healthCheck.intervalMs),
      Effect.annotateLogs({ router: core.config.name }),
      Effect.forkScoped
    ))
    : Effect.void
  return { checkHealth, schedule }
}

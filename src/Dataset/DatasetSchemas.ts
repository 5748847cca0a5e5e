/**
 * Schemas of the dataset types whose modules stay free of `effect` (Placeholders.ts, Normalize.ts,
 * Rules.ts run in the ingest's worker threads, where loading `effect` would cost about 25 MB each).
 * Each is checked against its plain type, so the two cannot drift apart.
 */
import { Schema } from "effect"
import { liveTypes, type LiveType as LiveTypeT, type Replacement as ReplacementT } from "./Placeholders.ts"
import type { PlaceholderMap as PlaceholderMapT } from "./Normalize.ts"
import { ruleNames, severities, type RuleName as RuleNameT, type Severity as SeverityT } from "./Rules.ts"

export const LiveType: Schema.Codec<LiveTypeT> = Schema.Literals(liveTypes)

export const Replacement: Schema.Codec<ReplacementT> = Schema.Struct({
  placeholder: Schema.String,
  value: Schema.String,
  at: Schema.Int
})

export const PlaceholderMap: Schema.Codec<PlaceholderMapT> = Schema.Record(Schema.String, Schema.Array(Replacement))

export const RuleName: Schema.Codec<RuleNameT> = Schema.Literals(ruleNames)

export const Severity: Schema.Codec<SeverityT> = Schema.Literals(severities)

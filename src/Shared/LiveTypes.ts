/**
 * The live value types: the kinds of number a fine-tuned model must never memorise, each written as a typed
 * placeholder (`<PRICE>`). Plain data, no imports: the Model core's vocabulary and the Dataset's normalizer
 * (which runs in worker threads without `effect`) both read it.
 */

/** The placeholder types the normalizer writes. */
export const liveTypes = [
  "PRICE",
  "CHANGE",
  "PERCENT",
  "TIMESTAMP",
  "DATE",
  "VOLUME",
  "MARKET_CAP",
  "RATIO",
  "EPS",
  "YIELD"
] as const
/** one of `liveTypes` (its Schema is `LiveType` in Dataset/DatasetSchemas.ts) */
export type LiveType = (typeof liveTypes)[number]

/**
 * Seeded randomness for everything in evaluation that must be reproducible: `--limit` samples, rubric blinding and
 * row order, bootstrap intervals. The project's one PRNG (Shared/Prng.ts), the same sequence on every platform.
 */
import { SeededRng } from "../Shared/Prng.ts"

/** A PRNG returning floats in [0, 1). */
export const prng = (seed: number): (() => number) => {
  const rng = new SeededRng(seed)
  return () => rng.next()
}

/** Fisher–Yates shuffle (a copy). */
export const shuffle = <A>(xs: ReadonlyArray<A>, rand: () => number): Array<A> => {
  const a = [...xs]
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[a[i], a[j]] = [a[j]!, a[i]!]
  }
  return a
}

/** `n` items picked with the seed, returned in their original order (all of them when n >= length). */
export const seededSample = <A extends { readonly index: number }>(items: ReadonlyArray<A>, n: number, seed: number) =>
  n >= items.length ? [...items] : shuffle(items, prng(seed)).slice(0, n).sort((a, b) => a.index - b.index)

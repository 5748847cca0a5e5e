/**
 * The Porter stemmer exactly as NLTK implements it (`nltk.stem.porter.PorterStemmer`), because rouge-score's
 * `DefaultTokenizer(use_stemmer=True)` calls `porter.PorterStemmer()` — NLTK's default mode, `NLTK_EXTENSIONS`.
 * The other two NLTK modes are here too so users comparing with other tools can pick them.
 *
 * Written from the algorithm (Porter 1980) and NLTK's documented departures; checked word-for-word against NLTK
 * itself in all three modes on every test run (test/Metrics/RougeOracle.test.ts).
 */

export type PorterMode = "NLTK_EXTENSIONS" | "MARTIN_EXTENSIONS" | "ORIGINAL_ALGORITHM"

const irregularForms: Record<string, ReadonlyArray<string>> = {
  sky: ["sky", "skies"],
  die: ["dying"],
  lie: ["lying"],
  tie: ["tying"],
  news: ["news"],
  inning: ["innings", "inning"],
  outing: ["outings", "outing"],
  canning: ["cannings", "canning"],
  howe: ["howe"],
  proceed: ["proceed"],
  exceed: ["exceed"],
  succeed: ["succeed"]
}
const pool = new Map<string, string>()
for (const [stem, forms] of Object.entries(irregularForms)) for (const form of forms) pool.set(form, stem)

const isVowelChar = (c: string) => c === "a" || c === "e" || c === "i" || c === "o" || c === "u"

const isConsonant = (word: string, i: number): boolean => {
  const c = word[i]!
  if (isVowelChar(c)) return false
  if (c === "y") return i === 0 ? true : !isConsonant(word, i - 1)
  return true
}

/** m in [C](VC){m}[V]: the number of vowel->consonant transitions. */
const measure = (stem: string): number => {
  let m = 0
  let prevVowel = false
  for (let i = 0; i < stem.length; i++) {
    const consonant = isConsonant(stem, i)
    if (consonant && prevVowel) m++
    prevVowel = !consonant
  }
  return m
}
const positiveMeasure = (stem: string) => measure(stem) > 0

const containsVowel = (stem: string): boolean => {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true
  return false
}

const endsDoubleConsonant = (word: string) =>
  word.length >= 2 && word[word.length - 1] === word[word.length - 2] && isConsonant(word, word.length - 1)

type Rule = readonly [suffix: string, replacement: string, condition: ((stem: string) => boolean) | null]

export class PorterStemmer {
  private readonly cache = new Map<string, string>()
  readonly mode: PorterMode

  constructor(mode: PorterMode = "NLTK_EXTENSIONS") {
    this.mode = mode
  }

  private endsCvc(word: string): boolean {
    const n = word.length
    return (n >= 3 && isConsonant(word, n - 3) && !isConsonant(word, n - 2) && isConsonant(word, n - 1) &&
      word[n - 1] !== "w" && word[n - 1] !== "x" && word[n - 1] !== "y") ||
      (this.mode === "NLTK_EXTENSIONS" && n === 2 && !isConsonant(word, 0) && isConsonant(word, 1))
  }

  /** The first rule whose suffix matches decides: its condition failing stops the list (as in NLTK). */
  private applyRules(word: string, rules: ReadonlyArray<Rule>): string {
    for (const [suffix, replacement, condition] of rules) {
      if (suffix === "*d" && endsDoubleConsonant(word)) {
        const stem = word.slice(0, -2)
        return condition === null || condition(stem) ? stem + replacement : word
      }
      if (word.endsWith(suffix)) {
        const stem = suffix === "" ? word : word.slice(0, -suffix.length)
        return condition === null || condition(stem) ? stem + replacement : word
      }
    }
    return word
  }

  private step1a(word: string): string {
    if (this.mode === "NLTK_EXTENSIONS" && word.endsWith("ies") && word.length === 4) return word.slice(0, -3) + "ie"
    return this.applyRules(word, [["sses", "ss", null], ["ies", "i", null], ["ss", "ss", null], ["s", "", null]])
  }

  private step1b(word: string): string {
    if (this.mode === "NLTK_EXTENSIONS" && word.endsWith("ied")) {
      return word.slice(0, -3) + (word.length === 4 ? "ie" : "i")
    }
    if (word.endsWith("eed")) {
      const stem = word.slice(0, -3)
      return measure(stem) > 0 ? stem + "ee" : word
    }
    let intermediate: string | undefined
    for (const suffix of ["ed", "ing"]) {
      if (word.endsWith(suffix)) {
        const candidate = word.slice(0, -suffix.length)
        if (containsVowel(candidate)) {
          intermediate = candidate
          break
        }
      }
    }
    if (intermediate === undefined) return word
    const last = intermediate[intermediate.length - 1]!
    return this.applyRules(intermediate, [
      ["at", "ate", null],
      ["bl", "ble", null],
      ["iz", "ize", null],
      ["*d", last, () => last !== "l" && last !== "s" && last !== "z"],
      ["", "e", (stem) => measure(stem) === 1 && this.endsCvc(stem)]
    ])
  }

  private step1c(word: string): string {
    const condition = this.mode === "NLTK_EXTENSIONS"
      ? (stem: string) => stem.length > 1 && isConsonant(stem, stem.length - 1)
      : containsVowel
    return this.applyRules(word, [["y", "i", condition]])
  }

  private step2(word: string): string {
    if (this.mode === "NLTK_EXTENSIONS" && word.endsWith("alli") && positiveMeasure(word.slice(0, -4))) {
      return this.step2(word.slice(0, -4) + "al")
    }
    const rules: Array<Rule> = [
      ["ational", "ate", positiveMeasure],
      ["tional", "tion", positiveMeasure],
      ["enci", "ence", positiveMeasure],
      ["anci", "ance", positiveMeasure],
      ["izer", "ize", positiveMeasure],
      this.mode === "ORIGINAL_ALGORITHM" ? ["abli", "able", positiveMeasure] : ["bli", "ble", positiveMeasure],
      ["alli", "al", positiveMeasure],
      ["entli", "ent", positiveMeasure],
      ["eli", "e", positiveMeasure],
      ["ousli", "ous", positiveMeasure],
      ["ization", "ize", positiveMeasure],
      ["ation", "ate", positiveMeasure],
      ["ator", "ate", positiveMeasure],
      ["alism", "al", positiveMeasure],
      ["iveness", "ive", positiveMeasure],
      ["fulness", "ful", positiveMeasure],
      ["ousness", "ous", positiveMeasure],
      ["aliti", "al", positiveMeasure],
      ["iviti", "ive", positiveMeasure],
      ["biliti", "ble", positiveMeasure]
    ]
    if (this.mode === "NLTK_EXTENSIONS") {
      rules.push(["fulli", "ful", positiveMeasure])
      // the 'l' of 'logi' stays with the stem so short stems like 'geo' work like 'philo'
      rules.push(["logi", "log", () => positiveMeasure(word.slice(0, -3))])
    }
    if (this.mode === "MARTIN_EXTENSIONS") rules.push(["logi", "log", positiveMeasure])
    return this.applyRules(word, rules)
  }

  private step3(word: string): string {
    return this.applyRules(word, [
      ["icate", "ic", positiveMeasure],
      ["ative", "", positiveMeasure],
      ["alize", "al", positiveMeasure],
      ["iciti", "ic", positiveMeasure],
      ["ical", "ic", positiveMeasure],
      ["ful", "", positiveMeasure],
      ["ness", "", positiveMeasure]
    ])
  }

  private step4(word: string): string {
    const gt1 = (stem: string) => measure(stem) > 1
    return this.applyRules(word, [
      ["al", "", gt1],
      ["ance", "", gt1],
      ["ence", "", gt1],
      ["er", "", gt1],
      ["ic", "", gt1],
      ["able", "", gt1],
      ["ible", "", gt1],
      ["ant", "", gt1],
      ["ement", "", gt1],
      ["ment", "", gt1],
      ["ent", "", gt1],
      ["ion", "", (stem) => measure(stem) > 1 && (stem.endsWith("s") || stem.endsWith("t"))],
      ["ou", "", gt1],
      ["ism", "", gt1],
      ["ate", "", gt1],
      ["iti", "", gt1],
      ["ous", "", gt1],
      ["ive", "", gt1],
      ["ize", "", gt1]
    ])
  }

  private step5a(word: string): string {
    // both (m>1) E and (m=1 and not *o) E are tried, unlike other rule lists
    if (word.endsWith("e")) {
      const stem = word.slice(0, -1)
      const m = measure(stem)
      if (m > 1) return stem
      if (m === 1 && !this.endsCvc(stem)) return stem
    }
    return word
  }

  private step5b(word: string): string {
    return this.applyRules(word, [["ll", "l", () => measure(word.slice(0, -1)) > 1]])
  }

  /** Stem one lower-case word (callers lower-case first, as rouge-score does). */
  stem(word: string): string {
    const cached = this.cache.get(word)
    if (cached !== undefined) return cached
    const result = this.stemUncached(word)
    // a bounded memo: answer vocabularies are small, but never grow without limit
    if (this.cache.size >= 200_000) this.cache.clear()
    this.cache.set(word, result)
    return result
  }

  private stemUncached(word: string): string {
    const lower = word.toLowerCase()
    if (this.mode === "NLTK_EXTENSIONS") {
      const irregular = pool.get(word)
      if (irregular !== undefined) return irregular
    }
    if (this.mode !== "ORIGINAL_ALGORITHM" && word.length <= 2) return lower
    let stem = this.step1a(lower)
    stem = this.step1b(stem)
    stem = this.step1c(stem)
    stem = this.step2(stem)
    stem = this.step3(stem)
    stem = this.step4(stem)
    stem = this.step5a(stem)
    return this.step5b(stem)
  }
}

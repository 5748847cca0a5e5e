/**
 * BLEU, ROUGE and the Porter stemmer against the reference implementations' *published* test cases (sacrebleu's
 * test_bleu.py, rouge-score's rouge_scorer_test.py and ROUGE-1.5.5 ground truth, Martin Porter's voc.txt output),
 * plus invariants on arbitrary text. The comparisons with the libraries themselves, run on every CI run, are in
 * test/Metrics/BleuOracle.test.ts and RougeOracle.test.ts (sacrebleu, rouge-score and NLTK in the test Python).
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  bleuSignature,
  computeBleu,
  corpusBleu,
  sentenceBleu,
  tokenize13a
} from "../../src/Metrics/Bleu.ts"
import { PorterStemmer } from "../../src/Metrics/Porter.ts"
import { aggregateRouge, rougeL, rougeScores, rougeTypes } from "../../src/Metrics/Rouge.ts"

describe("sacrebleu 13a tokenizer", () => {
  it("keeps decimal separators and splits dashes after digits", () => {
    assert.strictEqual(tokenize13a("$1,234.50 rose 1.2% (Q3-2024)."), "$ 1,234.50 rose 1.2 % ( Q3 - 2024 ) .")
    assert.strictEqual(tokenize13a("AT&amp;T <PRICE>"), "AT & T < PRICE >")
  })
})

describe("corpus BLEU", () => {
  it("prints sacrebleu's signature", () => {
    assert.strictEqual(bleuSignature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp")
    assert.strictEqual(bleuSignature({ smoothMethod: "floor", lowercase: true, nrefs: 2 }, true), "nrefs:2|case:lc|eff:yes|tok:13a|smooth:floor[0.10]")
  })

  it("scores an empty reference as one of length 0 (as sacrebleu 2.6 does) and rejects streams of the wrong length", () => {
    const empty = corpusBleu(["a"], [[""]])
    assert.strictEqual(empty.score, 0)
    assert.strictEqual(empty.refLen, 0)
    assert.throws(() => corpusBleu(["a", "b"], [["x"]]), /reference stream 0 has 1 segments/)
  })
})

// mjpost/sacrebleu test/test_bleu.py (published expectations)
describe("sacrebleu published test cases", () => {
  const refs = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]
  ]
  const hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
  const raw = { smoothMethod: "floor", smoothValue: 0.01, tokenize: "none", effectiveOrder: true } as const

  it("corpus BLEU of the README example", () => {
    assert.approximately(corpusBleu(hyps, refs).score, 48.530827, 1e-6)
    assert.strictEqual(corpusBleu(["", "", ""], refs).score, 0)
    assert.approximately(corpusBleu(hyps, refs, { tokenize: "none" }).score, 49.1919566, 1e-6)
    assert.approximately(corpusBleu(hyps, refs, { smoothMethod: "none" }).score, 48.530827, 1e-6)
  })
  it("raw corpus BLEU and effective order", () => {
    // sacrebleu < 2 printed 0.0038 here; 2.x stops early when nothing matches (sacrebleu #141), and so do we
    assert.strictEqual(corpusBleu(["this is a test", "another test"], [["ref1", "ref2"]], raw).score, 0)
    assert.approximately(corpusBleu(["this is a test"], [["this is a test"]], raw).score / 100, 1, 1e-8)
    assert.approximately(corpusBleu(["this is a fest"], [["this is a test"]], raw).score / 100, 0.223606797749979, 1e-8)
    assert.approximately(corpusBleu(["test"], [["a test"]], raw).score / 100, 0.3678794411714425, 1e-8)
    assert.approximately(corpusBleu(["a test"], [["a test"]], raw).score / 100, 1, 1e-8)
    assert.approximately(corpusBleu(["a little test"], [["a test"]], raw).score / 100, 0.03218297948685433, 1e-8)
  })
  it("statistics, offsets and scoring from statistics", () => {
    const r = corpusBleu(["am I am a character sequence"], [["I am a symbol string sequence a a"]], raw)
    assert.deepStrictEqual([r.counts, r.totals], [[4, 2, 1, 0], [6, 5, 4, 3]])
    const noOffset = { ...raw, smoothValue: 0 }
    assert.approximately(corpusBleu(["am I am a character sequence"], [["I am a symbol string sequence a a"]], noOffset).score, 0, 1e-8)
    const withDefault = { smoothMethod: "floor", tokenize: "none", effectiveOrder: true } as const
    assert.approximately(corpusBleu(["am I am a character sequence"], [["I am a symbol string sequence a a"]], withDefault).score / 100, 0.1555722182, 1e-8)
    assert.approximately(computeBleu([9, 7, 5, 3], [10, 8, 6, 4], 11, 11).score / 100, 0.8375922397, 1e-8)
  })
  it("degenerate statistics give 0", () => {
    const cases: Array<[Array<number>, Array<number>, number, number, number]> = [
      [[0, 0, 0, 0], [4, 4, 2, 1], 0, 1, 0],
      [[0, 0, 0, 0], [10, 11, 12, 0], 14, 10, 0],
      [[0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0],
      [[6, 5, 4, 0], [6, 5, 4, 3], 6, 6, 0],
      [[0, 0, 0, 0], [0, 0, 0, 0], 0, 0, 0.1],
      [[0, 0, 0, 0], [0, 0, 0, 0], 1, 5, 0.01]
    ]
    for (const [c, t, sys, ref, offset] of cases) {
      assert.strictEqual(computeBleu(c, t, sys, ref, { smoothMethod: "floor", smoothValue: offset }).score, 0)
    }
  })
})

describe("Porter stemmer, published outputs", () => {
  it("MARTIN_EXTENSIONS reproduces Martin Porter's published output (first 150 words of his voc.txt)", () => {
    // the vocabulary and output.txt stems as reproduced in JGAAP's PorterStemmer test
    const words = (
      "a aaron abaissiez abandon abandoned abase abash abate abated abatement abatements abates abbess " +
      "abbey abbeys abbominable abbot abbots abbreviated abed abel aberga abergavenny abet abetting " +
      "abhominable abhor abhorr abhorred abhorring abhors abhorson abide abides abilities ability abject " +
      "abjectly abjects abjur abjure able abler aboard abode aboded abodements aboding abominable " +
      "abominably abominations abortive abortives abound abounding about above abr abraham abram abreast " +
      "abridg abridge abridged abridgment abroach abroad abrogate abrook abrupt abruption abruptly absence " +
      "absent absey absolute absolutely absolv absolver abstains abstemious abstinence abstract absurd " +
      "absyrtus abundance abundant abundantly abus abuse abused abuser abuses abusing abutting aby abysm ac " +
      "academe academes accent accents accept acceptable acceptance accepted accepts access accessary " +
      "accessible accidence accident accidental accidentally accidents accite accited accites acclamations " +
      "accommodate accommodated accommodation accommodations accommodo accompanied accompany accompanying " +
      "accomplices accomplish accomplished accomplishing accomplishment accompt accord accordant accorded " +
      "accordeth according accordingly accords accost accosted account accountant accounted accounts " +
      "accoutred accoutrement accoutrements accrue"
    ).split(" ")
    const stems = (
      "a aaron abaissiez abandon abandon abas abash abat abat abat abat abat abbess abbei abbei abbomin " +
      "abbot abbot abbrevi ab abel aberga abergavenni abet abet abhomin abhor abhorr abhor abhor abhor " +
      "abhorson abid abid abil abil abject abjectli abject abjur abjur abl abler aboard abod abod abod abod " +
      "abomin abomin abomin abort abort abound abound about abov abr abraham abram abreast abridg abridg " +
      "abridg abridg abroach abroad abrog abrook abrupt abrupt abruptli absenc absent absei absolut absolut " +
      "absolv absolv abstain abstemi abstin abstract absurd absyrtu abund abund abundantli abu abus abus " +
      "abus abus abus abut abi abysm ac academ academ accent accent accept accept accept accept accept " +
      "access accessari access accid accid accident accident accid accit accit accit acclam accommod " +
      "accommod accommod accommod accommodo accompani accompani accompani accomplic accomplish accomplish " +
      "accomplish accomplish accompt accord accord accord accordeth accord accordingli accord accost accost " +
      "account account account account accoutr accoutr accoutr accru"
    ).split(" ")
    assert.strictEqual(words.length, 150)
    const martin = new PorterStemmer("MARTIN_EXTENSIONS")
    assert.deepStrictEqual(words.map((w) => martin.stem(w)), stems)
    // NLTK's own departures, which rouge-score's default mode inherits
    const nltk = new PorterStemmer()
    assert.deepStrictEqual(["abbey", "abed", "absey"].map((w) => nltk.stem(w)), ["abbey", "abe", "absey"])
  })
  it("the paper's examples (default mode)", () => {
    const p = new PorterStemmer()
    assert.deepStrictEqual(
      ["caresses", "ponies", "relational", "hopping", "generalizations", "dying", "flies"].map((w) => p.stem(w)),
      ["caress", "poni", "relat", "hop", "gener", "die", "fli"]
    )
  })
})

// google-research/rouge rouge_scorer_test.py: its own cases and its ROUGE-1.5.5 ground truth (testdata/pyrouge_files)
describe("rouge-score published test cases", () => {
  const close = (x: { recall: number; precision: number; fmeasure: number }, r: number, p: number, f: number, places = 5) => {
    assert.approximately(x.recall, r, 0.5 * 10 ** -places)
    assert.approximately(x.precision, p, 0.5 * 10 ** -places)
    assert.approximately(x.fmeasure, f, 0.5 * 10 ** -places)
  }
  it("unit cases", () => {
    close(rougeScores("testing", "testing one two").rouge1, 1 / 3, 1, 1 / 2, 7)
    close(rougeScores("testing one", "testing one two").rouge2, 1 / 2, 1, 2 / 3, 7)
    close(rougeScores("testing one", "testing one two").rougeL, 2 / 3, 1, 4 / 5, 7)
    close(rougeScores("testing two", "testing one two").rougeL, 2 / 3, 1, 4 / 5, 7)
    for (const t of rougeTypes) close(rougeScores("", "testing one two")[t], 0, 0, 0, 7)
    close(rougeScores("w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", "w1 w2 w3 w4 w5").rougeLsum, 0.8, 0.4, 0.5333, 3)
    close(rougeScores("", "w1 w2 w3 w4 w5").rougeLsum, 0, 0, 0, 3)
    close(rougeScores("w1", "").rougeLsum, 0, 0, 0, 3)
    close(rougeScores("/", "w1 w2 w3 w4 w5").rougeLsum, 0, 0, 0, 3)
  })
  it("ROUGE-1, ROUGE-2 and ROUGE-L equal ROUGE-1.5.5 on its test pairs, with and without stemming", () => {
    const t0 = "ZfbCUIUuePaiLVUlCaUXxkpu XPeWing tUHfPMuZ',-Xd Y BrUgVJing M-HV.-DgdDaY.rFDJCRing Ht-LM EKBDXkME,yz'RBr q'wtion wIojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxer tKM L\n"
    const p0 = "rFDJCRtion Ht-LM EKtDXkME,yz'RBr q'wer wrojNbN wL,b .a-'XdQggyFl jB-RPP'iyOIcUxi\n"
    const t1 = "KsJdPByEtAor fE-Qg Dpdbring cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMtion psing sbKao Q m qiing LMmer HqqLFXe,XPY,J XsurkMer ,ed nB'wH'bWVHjWFEing tQ.saefZwJtKrTlixYpMMsJing UCAPwNHeYVjDing c T BUySKtion gMPfJpwGw p'NvxAoping eu pBwMBKV'I DNxqelhu,PHPxDEq,mtion SN\n"
    const p1 = "n cw-WeFyu vC MoBL Xdn g wkvcEiGvKtion BDFhrpMer pstion sbKao Q m qier LMmed HqqLFXe,XPY,J XsurkMeo ,ed nB'wH'bWVHjWFEer tQ.saefZwJtKrTlixYpMMNJtion UCAPwNHeYVjD\n"
    const plain0 = rougeScores(p0, t0)
    const plain1 = rougeScores(p1, t1)
    const stem0 = rougeScores(p0, t0, { useStemmer: true })
    const stem1 = rougeScores(p1, t1, { useStemmer: true })
    close(plain0.rouge1, 0.40741, 0.6875, 0.51163)
    close(plain1.rouge1, 0.40476, 0.65385, 0.5)
    close(stem0.rouge1, 0.40741, 0.6875, 0.51163)
    close(stem1.rouge1, 0.42857, 0.69231, 0.52941)
    for (const r of [plain0, stem0]) close(r.rouge2, 0.30769, 0.53333, 0.39024)
    for (const r of [plain1, stem1]) close(r.rouge2, 0.29268, 0.48, 0.36364)
    close(plain0.rougeL, 0.40741, 0.6875, 0.51163)
    close(plain1.rougeL, 0.40476, 0.65385, 0.5)
  })
})

describe("ROUGE", () => {
  it("stemming changes scores where word forms differ", () => {
    const plain = rougeL("The investors were investing in investments.", "An investor invests in an investment.")
    const stemmed = rougeL("The investors were investing in investments.", "An investor invests in an investment.", { useStemmer: true })
    assert.isAbove(stemmed.fmeasure, plain.fmeasure)
  })
  it("aggregates as the arithmetic mean", () => {
    const a = rougeScores("a b c", "a b c")
    const b = rougeScores("x", "a b c")
    const mean = aggregateRouge([a, b])
    assert.strictEqual(mean.rouge1.fmeasure, (a.rouge1.fmeasure + b.rouge1.fmeasure) / 2)
    assert.strictEqual(mean.rouge1.fmeasure, 0.5)
    assert.strictEqual(aggregateRouge([]).rougeL.fmeasure, 0)
  })
})

// sacrebleu's tokenizer written literally (capture groups, the space inside the symbol class, no shortcuts), to
// check that the shortcuts in Bleu.ts change nothing on arbitrary text
const literal13a = (input: string) => {
  let line = input.replace(/<skipped>/g, "").replace(/-\n/g, "").replace(/\n/g, " ")
  if (line.includes("&")) line = line.replace(/&quot;/g, "\"").replace(/&amp;/g, "&").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
  line = ` ${line} `
  line = line.replace(/([\{-\~\[-\` -\&\(-\+\:-\@\/])/g, " $1 ")
  line = line.replace(/([^0-9])([\.,])/g, "$1 $2 ")
  line = line.replace(/([\.,])([^0-9])/g, " $1 $2")
  line = line.replace(/([0-9])(-)/g, "$1 $2 ")
  return line.split(/[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/).filter((t) => t !== "").join(" ")
}

describe("13a tokenizer shortcuts", () => {
  it("equal the literal regexes on random text", () => {
    const alphabet = [..."ab1 9.,-\n&;<>\"$%()x", "&amp;", "&quot;", "<skipped>", "-\n", "\u00a0", "\x1c", "é", "😀"]
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...alphabet), { maxLength: 40 }), (parts) => {
        const s = parts.join("")
        assert.strictEqual(tokenize13a(s), literal13a(s))
      }),
      { numRuns: 3000, seed: 7 }
    )
  })
})

describe("metric invariants on arbitrary text", () => {
  const text = fc.array(
    fc.oneof(
      fc.constantFrom("the", "stock", "rose", "1.2%", "$1,234.50", "<PRICE>", ",", ".", "\n", " ", "investing", "Σ", "😀", "-"),
      fc.string({ maxLength: 6 })
    ),
    { maxLength: 30 }
  ).map((parts) => parts.join(" "))

  it("ROUGE: scores in [0, 1], precision and recall swap with the arguments, identical texts score 1", () => {
    fc.assert(
      fc.property(text, text, fc.boolean(), (a, b, stem) => {
        const ab = rougeScores(a, b, { useStemmer: stem })
        const ba = rougeScores(b, a, { useStemmer: stem })
        for (const t of rougeTypes) {
          for (const k of ["precision", "recall", "fmeasure"] as const) {
            assert.isTrue(ab[t][k] >= 0 && ab[t][k] <= 1, `${t} ${k}`)
          }
          assert.strictEqual(ab[t].precision, ba[t].recall)
          assert.strictEqual(ab[t].fmeasure, ba[t].fmeasure)
        }
        const self = rougeScores(a, a, { useStemmer: stem })
        if (self.rouge1.precision > 0) assert.strictEqual(self.rougeL.fmeasure, 1)
      }),
      { numRuns: 400, seed: 11 }
    )
  })

  it("BLEU: sentence scores in [0, 100]; a hypothesis equal to its reference scores 100", () => {
    fc.assert(
      fc.property(text, text, (a, b) => {
        fc.pre(b.trim() !== "")
        const s = sentenceBleu(a, [b]).score
        assert.isTrue(s >= 0 && s <= 100 + 1e-9, String(s))
        if (tokenize13a(b) !== "") assert.approximately(sentenceBleu(b, [b]).score, 100, 1e-9)
      }),
      { numRuns: 400, seed: 12 }
    )
  })
})

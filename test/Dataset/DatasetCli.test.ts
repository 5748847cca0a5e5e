import { describe, expect, it } from "vitest"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { groupDigits } from "../../src/Dataset/Cli.ts"

// The built CLI (npm test builds first), run as a user would: exit codes and messages are the contract.
// Most cases use the dataset-only entry (the same command without loading the other stages: faster);
// the first checks the wiring into the main CLI.
const run = (entry: ReadonlyArray<string>, args: ReadonlyArray<string>, input?: string) => {
  const r = spawnSync(process.execPath, [...entry, ...args], { input, encoding: "utf8", timeout: 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}
const cli = (args: ReadonlyArray<string>, input?: string) => run(["dist/Dataset/Main.js"], args, input)
const tmp = () => mkdtempSync(join(tmpdir(), "dataset-cli-"))
const record = (question: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ question, answer: "Diversification spreads risk.", rationale: "", tickers: [], citations: [], context_required: false, ...extra })

describe("dataset CLI", () => {
  it("has --help with a description on every subcommand, in the main CLI too", () => {
    const top = run(["dist/Main.js", "dataset"], ["--help"])
    expect(top.code).toBe(0)
    expect(top.stdout).toContain("finetune-finance dataset <subcommand>")
    for (const sub of ["synth", "validate", "normalize", "split", "stats"]) {
      expect(top.stdout).toContain(sub)
      const help = cli([sub, "--help"])
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("DESCRIPTION")
      expect(help.stdout).toContain(`dataset ${sub}`)
    }
    expect(run(["dist/Main.js", "dataset", "split"], ["--help"]).stdout).toContain("--group-by-ticker")
  })

  it("synthesizes, splits and describes a file; same seed, same bytes", () => {
    const dir = tmp()
    const file = join(dir, "synth.jsonl")
    const s1 = cli(["synth", "--count", "400", "--seed", "3", "-o", file])
    expect(s1.code).toBe(0)
    expect(s1.stderr).toMatch(/synth: 400 records, [\d,]+ records\/s/)
    const first = readFileSync(file, "utf8")
    expect(first.split("\n").length).toBe(401)
    const s2 = cli(["synth", "--count", "400", "--seed", "3"])
    expect(s2.stdout).toBe(first)

    const split = cli(["split", file, "-o", join(dir, "out"), "--test-ratio", "0.2"])
    expect(split.code).toBe(0)
    const line = /400 lines \(0 blank\) -> train \d+, test \d+ \((\d+) groups: (\d+) train, (\d+) test\), duplicates \d+ exact \+ \d+ normalized, rejected 0/.exec(split.stderr)
    expect(line).not.toBeNull()
    const summary = JSON.parse(readFileSync(join(dir, "out", "summary.json"), "utf8"))
    // the stderr line reports the split's groups as summary.json has them
    expect(line!.slice(1).map(Number)).toEqual([summary.groups.total, summary.groups.train, summary.groups.test])
    expect(summary.groups.total).toBe(summary.groups.train + summary.groups.test)
    expect(summary.groups.test).toBeGreaterThan(0)
    expect(summary.train + summary.test + summary.duplicates.exact + summary.duplicates.normalized).toBe(400)
    expect(summary.testRatio).toBe(0.2)

    const stats = cli(["stats", file, "--json"])
    expect(stats.code).toBe(0)
    const s = JSON.parse(stats.stdout)
    expect(s.records).toBe(400)
    expect(Object.keys(s.byIntent).length).toBe(11)
    const table = cli(["stats", file])
    expect(table.stdout).toContain("by placeholder type:")
    expect(table.stdout).toMatch(/answer chars: +p50 \d+/)
  })

  it("reads stdin and normalizes with a reversible map", () => {
    const input = [record("Is AAPL at $189.50?", { answer: "AAPL is at $189.50, up 1.2%." }), "", "not json"].join("\n")
    const r = cli(["normalize", "-"], input)
    expect(r.code).toBe(0)
    const out = r.stdout.trim().split("\n").map((l) => JSON.parse(l))
    expect(out.length).toBe(1)
    expect(out[0].answer).toBe("AAPL is at <PRICE>, up <CHANGE>.")
    expect(out[0].placeholder_map.answer).toEqual([
      { placeholder: "<PRICE>", value: "$189.50", at: 11 },
      { placeholder: "<CHANGE>", value: "1.2%", at: 23 }
    ])
    expect(r.stderr).toContain("<stdin>:3: <root>: invalid JSON")
    const dir = tmp()
    const split = cli(["split", "-", "-o", dir], [record("a?"), record("b?"), record("a?")].join("\n"))
    expect(split.code).toBe(0)
    expect(JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")).duplicates.exact).toBe(1)
  })

  it("--strict exits 2 naming file, line, field and reason, without a stack trace", () => {
    const dir = tmp()
    const file = join(dir, "bad.jsonl")
    writeFileSync(file, [record("ok?"), record("also ok?"), record("bad?", { tickers: [1] })].join("\n"))
    const r = cli(["split", file, "-o", join(dir, "out"), "--strict"])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`dataset: ${file}:3: tickers.0: Expected string, got number`)
    expect(r.stderr).not.toMatch(/\n\s+at /)
    const v = cli(["validate", file])
    expect(v.code).toBe(0)
    expect(v.stderr).toContain(`${file}:3: tickers.0: Expected string, got number [schema]`)
  })

  it("exits 3 over --max-reject-rate after writing outputs, and 1 on a missing file or bad flag", () => {
    const dir = tmp()
    const file = join(dir, "in.jsonl")
    writeFileSync(file, [record("ok?"), "{", "{"].join("\n") + "\n")
    const r = cli(["split", file, "-o", join(dir, "out"), "--max-reject-rate", "0.5"])
    expect(r.code).toBe(3)
    expect(r.stderr).toContain("2 of 3 records rejected (66.67%), over the allowed 50.00%")
    expect(readFileSync(join(dir, "out", "rejects.jsonl"), "utf8").split("\n").length).toBe(3)
    const missing = cli(["split", join(dir, "nope.jsonl"), "-o", join(dir, "o2")])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain("nope.jsonl: no such file")
    const rules = cli(["validate", file, "--rules", "made_up=warn"])
    expect(rules.code).toBe(1)
    expect(rules.stderr).toContain("--rules: unknown rule \"made_up\"")
    const workers = cli(["split", file, "-o", join(dir, "o3"), "--workers", "-1"])
    expect(workers.code).toBe(1)
    expect(workers.stderr).toContain("--workers must be 0 or more")
  })

  it("splits a large file on a worker thread into the same bytes as on one thread", () => {
    const dir = tmp()
    const file = join(dir, "big.jsonl")
    // past the 20,000 lines after which the ingest starts its worker; every 10th line repeats an earlier one
    writeFileSync(file, Array.from({ length: 30_000 }, (_, i) => record(`Question ${i % 10 === 9 ? i - 5 : i}?`)).join("\n") + "\n")
    const one = cli(["split", file, "-o", join(dir, "w0"), "--workers", "0"])
    const two = cli(["split", file, "-o", join(dir, "w1"), "--workers", "1"])
    expect([one.code, two.code]).toEqual([0, 0])
    for (const f of ["train.jsonl", "test.jsonl", "rejects.jsonl"]) {
      expect(readFileSync(join(dir, "w1", f), "utf8") === readFileSync(join(dir, "w0", f), "utf8")).toBe(true)
    }
    const summary = JSON.parse(readFileSync(join(dir, "w1", "summary.json"), "utf8"))
    expect([summary.linesRead, summary.duplicates.exact, summary.train + summary.test]).toEqual([30_000, 3_000, 27_000])
  })
})

describe("progress numbers", () => {
  it("groups digits by thousands as en-US does, without loading ICU", () => {
    for (const n of [0, 7, 999, 1000, 12345, 999999, 1000000, 176834, 1234567890, -4321]) {
      expect(groupDigits(n)).toBe(n.toLocaleString("en-US"))
    }
  })
})

describe("long record lines (issue 21: fingerprint scratch buffer)", () => {
  it("splits and validates records whose line is longer than 4,092 bytes and of odd length", () => {
    const dir = tmp()
    const file = join(dir, "long.jsonl")
    const lines: Array<string> = []
    for (const target of [4093, 5001, 9999, 20_001]) {
      const base = record(`Long question ${target}?`, { answer: "" })
      // pad the answer so the whole line has exactly `target` bytes
      const pad = "x".repeat(target - Buffer.byteLength(base))
      const line = base.replace('"answer":""', `"answer":"${pad}"`)
      expect(Buffer.byteLength(line) % 2).toBe(1)
      expect(Buffer.byteLength(line)).toBe(target)
      lines.push(line)
    }
    writeFileSync(file, lines.join("\n") + "\n")
    const split = cli(["split", file, "-o", join(dir, "out"), "--test-ratio", "0.5"])
    expect(split.stderr).not.toContain("RangeError")
    expect(split.code).toBe(0)
    const summary = JSON.parse(readFileSync(join(dir, "out", "summary.json"), "utf8"))
    expect(summary.train + summary.test).toBe(4)
    const validate = cli(["validate", file])
    expect(validate.stderr).not.toContain("RangeError")
    expect(validate.code).toBe(0)
  })
})

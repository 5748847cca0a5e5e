/**
 * The pure parts of serving: placeholder rehydration from both context forms, the streaming rehydrator, stop-string
 * hold-back, and prompt rendering (seed layout, chat template).
 */
import { describe, expect, it } from "vitest"
import { firstStopIndex, heldBackLength } from "../../src/Serving/InferenceEngine.ts"
import { chatAsSeedPrompt, layoutOfChatTemplate, renderChatTemplate, renderPrompt, seedPrompt, servedPromptFor } from "../../src/Serving/Prompt.ts"
import { defaultSystemPrompt, formatPrompt } from "../../src/Dataset/PromptFormat.ts"
import { placeholderValues, placeholderValuesOf, rehydrate, StreamingRehydrator } from "../../src/Serving/Rehydrate.ts"
import { renderRagContext } from "../../src/Dataset/RagContext.ts"
import { chatTemplate } from "../../src/Model/FinanceVocabulary.ts"

const now = new Date("2026-11-25T15:30:00.000Z")

const structured = {
  symbol: "AAPL",
  prices: {
    AAPL: { price: 189.5, changePercent: 0.45 },
    MSFT: { price: 402.1, changePercent: -1.2 },
    NVDA: { price: 120, changePercent: 3.75 }
  },
  fundamentals: { peRatio: 28.5, priceToBook: 45.2, dividendYield: 0.55, sector: "Technology" },
  marketData: { session: "open", indices: { SPY: { value: 512.34, changePercent: 0.45 }, QQQ: { value: 440.1, changePercent: -0.3 } } }
}

describe("placeholder values from a context", () => {
  it("reads the app's formatRAGContext text and the structured object to the same values", () => {
    const fromText = placeholderValues(renderRagContext(structured), now)
    const fromObject = placeholderValues(structured, now)
    expect(fromText).toEqual(fromObject)
    expect(fromObject.get("SYMBOL")).toBe("AAPL")
    expect(fromObject.get("PRICE")).toBe("$189.50")
    expect(fromObject.get("CHANGE")).toBe("+0.45%")
    expect(fromObject.get("MSFT_CHANGE")).toBe("-1.20%")
    expect(fromObject.get("SPY_PRICE")).toBe("$512.34")
    expect(fromObject.get("QQQ_CHANGE")).toBe("-0.30%")
    expect(fromObject.get("STOCK_2")).toBe("MSFT")
    expect(fromObject.get("TOP_MOVER_1")).toBe("NVDA")
    expect(fromObject.get("MOVER_2_CHANGE")).toBe("-1.20%")
    expect(fromObject.get("PE_RATIO")).toBe("28.5")
    expect(fromObject.get("PE")).toBe("28.5")
    expect(fromObject.get("DIVIDEND_YIELD")).toBe("0.55")
    expect(fromObject.get("TIMESTAMP")).toBe("2026-11-25T15:30:00.000Z")
    expect(fromObject.get("DATE")).toBe("2026-11-25")
  })

  it("takes explicit placeholder values from a structured context over derived ones", () => {
    const values = placeholderValues({ ...structured, placeholders: { "<SENTIMENT>": "bullish", PRICE: "$190.00" } }, now)
    expect(values.get("SENTIMENT")).toBe("bullish")
    expect(values.get("PRICE")).toBe("$190.00")
  })

  it("has only the time for an empty context", () => {
    expect([...placeholderValues("", now).keys()].sort()).toEqual(["DATE", "TIMESTAMP"])
  })
})

describe("rehydration", () => {
  const values = placeholderValues(structured, now)
  const answer = "<SYMBOL> trades at <PRICE> (<CHANGE>) with a P/E of <PE_RATIO>; sentiment is <SENTIMENT> and <REASON_1>."

  it("fills what the context holds and reports the rest, leaving them by default", () => {
    const r = rehydrate(answer, values, "leave")
    expect(r.text).toBe("AAPL trades at $189.50 (+0.45%) with a P/E of 28.5; sentiment is <SENTIMENT> and <REASON_1>.")
    expect(r.report).toEqual({
      filled: { "<SYMBOL>": "AAPL", "<PRICE>": "$189.50", "<CHANGE>": "+0.45%", "<PE_RATIO>": "28.5" },
      unfilled: ["<SENTIMENT>", "<REASON_1>"],
      policy: "leave"
    })
  })

  it("removes unfilled placeholders when asked, tidying the spaces", () => {
    expect(rehydrate("Sentiment is <SENTIMENT> today, price <PRICE>.", values, "remove").text).toBe("Sentiment is today, price $189.50.")
  })

  it("does not double a percent sign the model wrote after a change placeholder", () => {
    expect(rehydrate("up <CHANGE>% today", values, "leave").text).toBe("up +0.45% today")
  })

  it("reads the context only for an answer that has a placeholder, and only once", () => {
    let reads = 0
    const lazy = () => {
      reads++
      return values
    }
    const plain = rehydrate("A plain answer, up 5%% on the day.", lazy, "refuse")
    expect(plain).toEqual({ text: "A plain answer, up 5% on the day.", report: { filled: {}, unfilled: [], policy: "refuse" } })
    expect(reads).toBe(0)
    const streaming = new StreamingRehydrator(placeholderValuesOf(structured), "leave")
    expect(streaming.push("No placeholder yet, ") + streaming.push("then <PRICE> and <CHANGE>.") + streaming.flush())
      .toBe("No placeholder yet, then $189.50 and +0.45%.")
    expect(rehydrate(answer, lazy, "leave")).toEqual(rehydrate(answer, values, "leave"))
    expect(reads).toBe(1)
  })

  it("streams: never emits half a placeholder, and ends with the same text as the whole", () => {
    const pieces = ["<SYM", "BOL> trades at <", "PRICE", "> (<CHA", "NGE>) and <SENTI", "MENT> a < b"]
    const streaming = new StreamingRehydrator(values, "leave")
    const out = pieces.map((p) => streaming.push(p))
    out.push(streaming.flush())
    for (const chunk of out) expect(chunk).not.toMatch(/<[A-Z_]*$/)
    expect(out.join("")).toBe("AAPL trades at $189.50 (+0.45%) and <SENTIMENT> a < b")
    expect(streaming.report.unfilled).toEqual(["<SENTIMENT>"])
    expect(Object.keys(streaming.report.filled)).toEqual(["<SYMBOL>", "<PRICE>", "<CHANGE>"])
  })
})

describe("stop strings", () => {
  it("holds back the longest tail that could still become a stop string", () => {
    expect(heldBackLength("the answer\nQue", ["\nQuestion:"])).toBe(4)
    expect(heldBackLength("the answer", ["\nQuestion:"])).toBe(0)
    expect(heldBackLength("ab", ["xb", "bc"])).toBe(1)
  })
  it("finds the earliest stop string", () => {
    expect(firstStopIndex("a END b STOP", ["STOP", "END"])).toBe(2)
    expect(firstStopIndex("nothing", ["STOP", ""])).toBe(-1)
  })
})

describe("prompts", () => {
  it("renders /infer's record in the served layout, as the trainer formats it", () => {
    expect(seedPrompt("Current Symbol: AAPL", "Price?")).toBe("Context: Current Symbol: AAPL\nQuestion: Price?\nAnswer: ")
    // seed: the default for an adapter without a record; BOS prepended as the trainer does, the next record stops it
    expect(renderPrompt({ _tag: "Record", context: "c", question: "q" }, chatTemplate, { bos: "<s>", eos: "</s>" }))
      .toEqual({ text: "Context: c\nQuestion: q\nAnswer: ", parseSpecialTokens: false, bos: "prepend", stops: ["\nQuestion:", "\nContext:"], layout: "seed" })
    // chatml: formatPrompt's text, control tokens parsed, no BOS (the layout spells its own), the end of turn stops it
    const record = { question: "Price?", context: { symbol: "AAPL", prices: { AAPL: { price: 189.5, changePercent: 0.45 } } } }
    const chatml = renderPrompt({ _tag: "Record", ...record }, chatTemplate, { bos: "<s>", eos: "</s>" }, { layout: "chatml", systemPrompt: "Be brief." })
    expect(chatml).toEqual({ text: formatPrompt(record, "chatml", "Be brief."), parseSpecialTokens: true, bos: "none", stops: ["<|im_end|>"], layout: "chatml" })
    expect(chatml.text.startsWith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nContext: ")).toBe(true)
  })

  it("serves the layout the adapter records, else seed; a base alone its chat template's; --layout overrides", () => {
    const trained = { layout: "chatml" as const, systemPrompt: defaultSystemPrompt }
    const smolTemplate = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    expect(servedPromptFor("auto", { recorded: trained, isAdapter: true, chatTemplate: undefined })).toEqual({ ...trained, source: "recorded" })
    expect(servedPromptFor("auto", { recorded: undefined, isAdapter: true, chatTemplate: smolTemplate }).layout).toBe("seed")
    expect(servedPromptFor("auto", { recorded: undefined, isAdapter: false, chatTemplate: smolTemplate })).toEqual({ layout: "chatml", systemPrompt: defaultSystemPrompt, source: "template" })
    expect(servedPromptFor("auto", { recorded: undefined, isAdapter: false, chatTemplate: chatTemplate }).layout).toBe("seed")
    expect(servedPromptFor("seed", { recorded: trained, isAdapter: true, chatTemplate: undefined })).toEqual({ layout: "seed", systemPrompt: defaultSystemPrompt, source: "flag" })
    expect([
      layoutOfChatTemplate("{{ bos_token }}<|start_header_id|>user<|end_header_id|>"),
      layoutOfChatTemplate("{{ bos_token }}[INST] {{ m.content }} [/INST]"),
      layoutOfChatTemplate(undefined)
    ]).toEqual(["llama3", "mistral", undefined])
  })

  it("renders the GGUF's chat template with the request's context as a system message", () => {
    const rendered = renderPrompt({ _tag: "Chat", context: "Current Symbol: AAPL", messages: [{ role: "user", content: "Price?" }] }, chatTemplate, { bos: "<s>", eos: "</s>" })
    expect(rendered).toEqual({
      text: "<|system|>\nContext: Current Symbol: AAPL<|end|>\n<|user|>\nPrice?<|end|>\n<|assistant|>\n",
      parseSpecialTokens: true
    })
    const llama3 = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    expect(renderChatTemplate(llama3, [{ role: "developer", content: [{ type: "text", text: "Be brief." }] }], { bos: "<|begin_of_text|>", eos: "" }))
      .toBe("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
  })

  it("falls back to the seed layout for a base without a chat template", () => {
    expect(chatAsSeedPrompt([
      { role: "system", content: "Prices: AAPL $1" },
      { role: "user", content: "first" },
      { role: "assistant", content: "ok" },
      { role: "user", content: "What now?" }
    ], "extra")).toBe("Context: Prices: AAPL $1\nextra\nQuestion: What now?\nAnswer: ")
  })
})

import { describe, expect, it } from "vitest"
import { formatSeconds } from "../../src/Pipeline/PipelineReport.ts"

describe("formatSeconds", () => {
  it("rounds before splitting minutes and seconds", () => {
    expect(formatSeconds(119.6)).toBe("2m00s")
    expect(formatSeconds(59.4)).toBe("59.4 s")
    expect(formatSeconds(61.2)).toBe("1m01s")
    expect(formatSeconds(undefined)).toBe("-")
  })
})

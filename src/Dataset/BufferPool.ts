/**
 * Spent batch buffers, kept for the next batch instead of freed. Every ingest batch needs three buffers of a
 * few hundred KB (the read chunk, the lines' bytes, the encoded records), two of which move between the
 * main thread and a worker;
 * allocating fresh ones per batch left glibc's heap fragmented (it grew with the input: tens of MB more
 * peak RSS at 1M records than at 100k) and cost a page fault per 4 KB and the GC's external-memory
 * pressure. The pool is bounded, so memory is flat: at most `maxPerKind` buffers of each kind wait here.
 */
export type BufferKind = "input" | "output" | "chunk"

export class BufferPool {
  private readonly free: Record<BufferKind, Array<ArrayBuffer>> = { input: [], output: [], chunk: [] }
  private readonly maxPerKind: number
  constructor(maxPerKind = 16) {
    this.maxPerKind = maxPerKind
  }

  /** a spent buffer of this kind (the largest), or undefined */
  take(kind: BufferKind): ArrayBuffer | undefined {
    return this.free[kind].pop()
  }

  /** keeps a spent buffer for later (a detached or empty one, or one over the bound, is dropped) */
  give(kind: BufferKind, buffer: ArrayBuffer | undefined): void {
    if (buffer === undefined || buffer.byteLength === 0 || buffer.detached) return
    const list = this.free[kind]
    if (list.length >= this.maxPerKind) return
    // the largest last, so `take` hands out the one most likely to fit
    let i = list.length
    while (i > 0 && list[i - 1]!.byteLength > buffer.byteLength) i--
    list.splice(i, 0, buffer)
  }

  /** buffers waiting, by kind (for tests) */
  get sizes(): Record<BufferKind, number> {
    return { input: this.free.input.length, output: this.free.output.length, chunk: this.free.chunk.length }
  }
}

/**
 * The body of an ingest worker thread (see IngestWorkers.ts): analyzes batches of lines with the
 * same `analyzeBatch` as the main thread and sends the result back, its buffers transferred, not copied.
 * It decodes only seed records (no `effect` loaded here); other lines are deferred to the main thread.
 */
import { parentPort } from "node:worker_threads"
import { analysisBuffers, analyzeBatch, type AnalyzeConfig, type BatchInput, seedOnlyDecoder } from "./Analyze.ts"

// set by the pool's first message (a worker may start before the command line is parsed)
let config: AnalyzeConfig | undefined
// loaded: batches may come (until now the main thread analyzed them itself, instead of waiting on this boot)
parentPort!.postMessage({ ready: true })
type Message = { readonly config: AnalyzeConfig } | { readonly id: number; readonly input: BatchInput; readonly spare: ArrayBuffer | undefined }
parentPort!.on("message", (msg: Message) => {
  if ("config" in msg) {
    config = msg.config
    return
  }
  const a = analyzeBatch(msg.input, config!, seedOnlyDecoder, msg.spare)
  const own = analysisBuffers(a)
  // the input's bytes, and the spare when it was too small, go back to the main thread's pool
  const spent = [msg.input.bytes.buffer as ArrayBuffer]
  if (msg.spare !== undefined && !own.includes(msg.spare)) spent.push(msg.spare)
  // every buffer here is the analysis's own or a pool's (never Buffer's shared pool), so moving them is safe
  parentPort!.postMessage({ id: msg.id, analysis: a, spent }, [...own, ...spent])
})

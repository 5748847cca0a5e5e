/**
 * The body of an ingest worker thread (see IngestWorkers.ts): analyzes batches of lines with the
 * same `analyzeBatch` as the main thread and sends the result back, its buffers transferred, not copied.
 * It decodes only seed records (no `effect` loaded here); other lines are deferred to the main thread.
 */
import { parentPort, workerData } from "node:worker_threads"
import { analyzeBatch, type AnalyzeConfig, type BatchInput, seedOnlyDecoder } from "./Analyze.ts"

const config = workerData as AnalyzeConfig
parentPort!.on("message", (msg: { readonly id: number; readonly input: BatchInput }) => {
  const a = analyzeBatch(msg.input, config, seedOnlyDecoder)
  // every buffer here is the analysis's own (never a shared pool), so moving them is safe
  parentPort!.postMessage({ id: msg.id, analysis: a }, [a.meta.buffer as ArrayBuffer, a.ends.buffer as ArrayBuffer, a.bytes.buffer as ArrayBuffer])
})

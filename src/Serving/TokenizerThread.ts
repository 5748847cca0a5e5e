/**
 * The worker thread of `OffThreadTokenizer`: the served GGUF's vocabulary only (`vocabOnly`, no weights), and a
 * loop that tokenizes what the main thread sends. Tokenizing a 1 MB prompt takes llama.cpp about 0.6 s; here that
 * time is off the event loop, so `/health` and the other requests keep being answered.
 *
 * Messages in: `{ id, text, special }`; out: `{ ready: true }` once, then `{ id, tokens }` (a transferred
 * Uint32Array) or `{ id, error }`. A load failure is posted as `{ failed }` and the thread ends.
 */
import { getLlama } from "node-llama-cpp"
import { parentPort, workerData } from "node:worker_threads"

const port = parentPort!
const { modelPath } = workerData as { readonly modelPath: string }

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e))

try {
  const llama = await getLlama({ gpu: false, build: "never", progressLogs: false, maxThreads: 1 })
  const model = await llama.loadModel({ modelPath, vocabOnly: true })
  port.on("message", (message: { readonly id: number; readonly text: string; readonly special: boolean }) => {
    try {
      const tokens = Uint32Array.from(model.tokenize(message.text, message.special))
      port.postMessage({ id: message.id, tokens }, [tokens.buffer])
    } catch (e) {
      port.postMessage({ id: message.id, error: messageOf(e) })
    }
  })
  port.postMessage({ ready: true })
} catch (e) {
  port.postMessage({ failed: messageOf(e) })
}

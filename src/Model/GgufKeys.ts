/**
 * The GGUF metadata keys the project reads and writes, in one table (names as llama.cpp's gguf-py `constants.py`
 * spells them). Code refers to `ggufKeys.x`, never to the string, so a key is spelled once.
 */
export const ggufKeys = {
  // general
  architecture: "general.architecture",
  type: "general.type",
  name: "general.name",
  fileType: "general.file_type",
  alignment: "general.alignment",
  // llama hyper-parameters (architecture "llama")
  vocabSize: "llama.vocab_size",
  contextLength: "llama.context_length",
  embeddingLength: "llama.embedding_length",
  blockCount: "llama.block_count",
  feedForwardLength: "llama.feed_forward_length",
  ropeDimensionCount: "llama.rope.dimension_count",
  headCount: "llama.attention.head_count",
  headCountKv: "llama.attention.head_count_kv",
  keyLength: "llama.attention.key_length",
  valueLength: "llama.attention.value_length",
  rmsEpsilon: "llama.attention.layer_norm_rms_epsilon",
  ropeFreqBase: "llama.rope.freq_base",
  ropeScalingType: "llama.rope.scaling.type",
  ropeScalingFactor: "llama.rope.scaling.factor",
  slidingWindow: "llama.attention.sliding_window",
  // tokenizer
  tokenizerModel: "tokenizer.ggml.model",
  tokenizerPre: "tokenizer.ggml.pre",
  tokens: "tokenizer.ggml.tokens",
  scores: "tokenizer.ggml.scores",
  tokenType: "tokenizer.ggml.token_type",
  merges: "tokenizer.ggml.merges",
  bosTokenId: "tokenizer.ggml.bos_token_id",
  eosTokenId: "tokenizer.ggml.eos_token_id",
  eotTokenId: "tokenizer.ggml.eot_token_id",
  unknownTokenId: "tokenizer.ggml.unknown_token_id",
  paddingTokenId: "tokenizer.ggml.padding_token_id",
  addBosToken: "tokenizer.ggml.add_bos_token",
  addEosToken: "tokenizer.ggml.add_eos_token",
  addSpacePrefix: "tokenizer.ggml.add_space_prefix",
  chatTemplate: "tokenizer.chat_template",
  // LoRA adapters
  adapterType: "adapter.type",
  adapterLoraAlpha: "adapter.lora.alpha",
  // ours: the prompt an adapter (or a merged model) was fine-tuned on, so serving renders the same prompt
  promptLayout: "finetune.prompt_layout",
  systemPrompt: "finetune.system_prompt"
} as const

export type GgufKey = (typeof ggufKeys)[keyof typeof ggufKeys]

/** llama.cpp's `general.file_type` (enum llama_ftype) of a model whose tensors are all of one type. */
export const llamaFileTypes = { F32: 0, F16: 1, Q8_0: 7, BF16: 32 } as const

/** The key of a named chat template (`tokenizer.chat_template.<name>`; the default one is `ggufKeys.chatTemplate`). */
export const namedChatTemplateKey = (name: string): string => `${ggufKeys.chatTemplate}.${name}`

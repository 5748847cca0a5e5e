/**
 * How generated tokens become text, the same for every engine (llama.cpp, the tfjs core, `model generate`).
 *
 * A byte-fallback vocabulary can end a generation in the middle of a UTF-8 character: the tokens `<0xE2> <0x82>`
 * are two thirds of "€". Decoding them gives U+FFFD, and llama.cpp's completion (node-llama-cpp 3.21.1,
 * `LlamaCompletion`) holds back every token whose text ends in U+FFFD until a later token completes it, dropping
 * what is still held when the generation stops. The rule here is that one: a trailing run of U+FFFD is not part of
 * the answer. U+FFFD inside the text (an invalid sequence that later text followed) stays, on both engines.
 */

/** The text of a finished generation: its trailing U+FFFD run (an unfinished UTF-8 character) removed. */
export const finishedText = (text: string): string => text.replace(/\uFFFD+$/u, "")

/** Generated tokens as text: `detokenize` of them all, as a finished generation (`finishedText`). */
export const renderTokens = (detokenize: (tokens: ReadonlyArray<number>) => string, tokens: ReadonlyArray<number>): string =>
  finishedText(detokenize(tokens))

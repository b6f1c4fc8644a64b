// Package tokenizer loads and runs the Hugging Face tokenizer.json formats that Llama-family models
// ship (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama), renders their Jinja chat templates, trains
// tiny byte-level BPE tokenizers for test models, and converts llama2.c tokenizer.bin files.
//
// The pipeline follows Hugging Face tokenizers: added tokens are split out of the raw text first,
// then each remaining piece is normalized, pre-tokenized and run through the BPE model; the
// post-processor adds special tokens such as BOS. Anything in a tokenizer.json that would change
// the result and is not implemented is reported as an error at load, never ignored.
//
// The truncation and padding sections of tokenizer.json are ignored, as transformers' fast
// tokenizers do unless asked: Encode never truncates or pads. transformers' decode-time
// clean_up_tokenization_spaces is not applied either; Decode is the tokenizers library's decode.
package tokenizer

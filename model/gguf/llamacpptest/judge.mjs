// Greedy generation with llama.cpp (node-llama-cpp's prebuilt CPU binaries): argv[2] is a JSON
// list of {model, lora, tokens}; each generates from BOS at temperature 0. Prints one JSON list
// of {ids, text}. One process for all jobs: loading the library takes seconds.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const jobs = JSON.parse(process.argv[2]);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.warn, skipDownload: true});
const results = [];
for (const job of jobs) {
  const model = await llama.loadModel({modelPath: job.model});
  const opts = {contextSize: 256, threads: 2};
  if (job.lora) opts.lora = {adapters: [{filePath: job.lora}]};
  const context = await model.createContext(opts);
  const seq = context.getSequence();
  const ids = [];
  for await (const tok of seq.evaluate([model.tokens.bos], {temperature: 0})) {
    ids.push(tok);
    if (ids.length >= job.tokens) break;
  }
  results.push({ids, text: model.detokenize(ids)});
  await context.dispose();
  await model.dispose();
}
console.log(JSON.stringify(results));
process.exit(0);

// llama.cpp's prefill and decode times through node-llama-cpp (its prebuilt CPU binaries), for
// `lathe bench --reference`: the same synthetic checkpoint lathe measures, exported to GGUF.
// argv[2] is a JSON spec {module, models: [{path, type}], prompt: [token ids], decode, repeats,
// threads, context}. For each model a first pass warms up, then each repeat clears the sequence,
// evaluates the prompt (the time to the first generated token) and decodes `decode` tokens
// greedily (the time between tokens). Prints one JSON list of {type, ttft: [s], token: [s], error}.
const spec = JSON.parse(process.argv[2]);
const {getLlama, LlamaLogLevel} = await import(spec.module);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, skipDownload: true});
const out = [];
for (const m of spec.models) {
  const r = {type: m.type, ttft: [], token: []};
  try {
    const model = await llama.loadModel({modelPath: m.path});
    const context = await model.createContext({contextSize: spec.context, threads: spec.threads, batchSize: Math.max(spec.prompt.length, 1)});
    const seq = context.getSequence();
    for (let rep = 0; rep <= spec.repeats; rep++) {
      await seq.clearHistory();
      let n = 0;
      const t0 = performance.now();
      let last = t0;
      for await (const tok of seq.evaluate(spec.prompt, {temperature: 0})) {
        const t = performance.now();
        if (rep > 0) {
          if (n === 0) r.ttft.push((t - t0) / 1e3);
          else r.token.push((t - last) / 1e3);
        }
        last = t;
        n++;
        if (n > spec.decode) break;
      }
    }
    await context.dispose();
    await model.dispose();
  } catch (e) {
    r.error = String((e && e.message) || e);
  }
  out.push(r);
}
console.log(JSON.stringify(out));
process.exit(0);

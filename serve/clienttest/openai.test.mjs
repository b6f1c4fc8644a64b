// The official OpenAI Node SDK against `lathe serve` (issue 19, items 8-13). Run by
// cmd/lathe/clienttest_test.go, which starts the server and sets LATHE_URL and LATHE_MODEL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.LATHE_URL;
const model = process.env.LATHE_MODEL;
if (!baseURL || !model) throw new Error('set LATHE_URL (http://host:port/v1) and LATHE_MODEL');
const client = new OpenAI({ baseURL, apiKey: process.env.LATHE_API_KEY || 'unused', maxRetries: 0, timeout: 60_000 });

test('chat content parts and the developer role (8)', async () => {
  const ask = (messages) => client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
  const plain = await ask([
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'What does the cow say?\nAnswer.' },
  ]);
  const parts = await ask([
    { role: 'developer', content: [{ type: 'text', text: 'Be brief.' }] },
    { role: 'user', content: [{ type: 'text', text: 'What does the cow say?' }, { type: 'text', text: 'Answer.' }] },
  ]);
  assert.equal(parts.object, 'chat.completion');
  assert.equal(parts.choices[0].message.role, 'assistant');
  assert.equal(parts.choices[0].message.content, plain.choices[0].message.content);
  assert.equal(parts.usage.prompt_tokens, plain.usage.prompt_tokens);
});

test('prompt arrays of strings and of token ids (9)', async () => {
  const one = async (prompt) => (await client.completions.create({ model, prompt, max_tokens: 5, temperature: 0 })).choices;
  const [a] = await one('The cat');
  const [b] = await one('The dog');
  const both = await one(['The cat', 'The dog']);
  assert.deepEqual(both.map((c) => c.text), [a.text, b.text]);
  assert.deepEqual(both.map((c) => c.index), [0, 1]);
  const ids = await one([5, 17, 42, 9]);
  assert.equal(ids.length, 1);
  const idLists = await one([[5, 17, 42, 9], [30, 31]]);
  assert.equal(idLists.length, 2);
  assert.equal(idLists[0].text, ids[0].text);
  const twoEach = await client.completions.create({ model, prompt: ['The cat', 'The dog'], n: 2, max_tokens: 3, temperature: 0 });
  assert.equal(twoEach.choices.length, 4);
});

test('GET /v1/models/{id} (10)', async () => {
  const m = await client.models.retrieve(model);
  assert.equal(m.id, model);
  assert.equal(m.object, 'model');
  const list = await client.models.list();
  assert.ok(list.data.some((x) => x.id === model));
  await assert.rejects(client.models.retrieve('no-such-model'), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
});

test('logprob bytes are the token bytes as integers (11)', async () => {
  const r = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 8, temperature: 1, seed: 3, logprobs: true, top_logprobs: 2,
  });
  const content = r.choices[0].logprobs.content;
  assert.ok(content.length > 0);
  for (const lp of content) {
    assert.ok(Array.isArray(lp.bytes), 'bytes is an array');
    for (const b of [lp, ...lp.top_logprobs]) {
      assert.ok(b.bytes.every((x) => Number.isInteger(x) && x >= 0 && x < 256), JSON.stringify(b.bytes));
      if (!b.token.includes('\uFFFD')) assert.equal(Buffer.from(b.bytes).toString('utf8'), b.token);
    }
    assert.equal(lp.top_logprobs.length, 2);
  }
});

test('n > 1 with stream: true (12)', async () => {
  const whole = await client.completions.create({ model, prompt: 'The cat', n: 3, max_tokens: 6, temperature: 1, seed: 11 });
  const stream = await client.completions.create({ model, prompt: 'The cat', n: 3, max_tokens: 6, temperature: 1, seed: 11, stream: true });
  const texts = ['', '', ''];
  const finished = [0, 0, 0];
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      texts[c.index] += c.text;
      if (c.finish_reason) finished[c.index]++;
    }
  }
  assert.deepEqual(finished, [1, 1, 1]);
  assert.deepEqual(texts, whole.choices.map((c) => c.text));

  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], n: 2, max_tokens: 5, temperature: 1, seed: 2, stream: true,
    stream_options: { include_usage: true },
  });
  const roles = [0, 0];
  const done = [0, 0];
  let usage = null;
  for await (const chunk of chat) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) roles[c.index]++;
      if (c.finish_reason) done[c.index]++;
    }
  }
  assert.deepEqual(roles, [1, 1]);
  assert.deepEqual(done, [1, 1]);
  assert.ok(usage && usage.completion_tokens > 0);
});

test('validation as OpenAI does it (13)', async () => {
  const bad = (params) => assert.rejects(client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, ...params,
  }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    return true;
  });
  await bad({ temperature: 2.5 });
  await bad({ top_p: 0 });
  await bad({ top_p: 1.5 });
  for (const [field, value] of [
    ['tools', [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }]],
    ['response_format', { type: 'json_object' }],
    ['logit_bias', { 5: 10 }],
  ]) {
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }], [field]: value }), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, new RegExp(field));
      return true;
    });
  }
  for (const [field, value] of [['suffix', 'end'], ['best_of', 3], ['echo', true]]) {
    await assert.rejects(client.completions.create({ model, prompt: 'Hi', max_tokens: 2, [field]: value }), (e) => {
      assert.equal(e.status, 400);
      assert.match(e.message, new RegExp(field));
      return true;
    });
  }
  // An unknown model is a 404 on every endpoint, whatever else is wrong with the request.
  const notFound = (e) => e instanceof OpenAI.NotFoundError && e.status === 404;
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'Hi' }], temperature: 9 }), notFound);
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'Hi' }), notFound);
  await assert.rejects(client.models.retrieve('nope'), notFound);
});

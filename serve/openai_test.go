package serve

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lathe-ml/lathe/model/tokenizer"
)

// A plain chat template for stories260K, which ships none.
const testTemplate = `{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}
{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}`

func choiceTexts(t *testing.T, out map[string]any, chat bool) []string {
	t.Helper()
	var texts []string
	for _, c := range out["choices"].([]any) {
		c := c.(map[string]any)
		if chat {
			texts = append(texts, c["message"].(map[string]any)["content"].(string))
		} else {
			texts = append(texts, c["text"].(string))
		}
	}
	return texts
}

// What the official SDKs send: content parts, the developer role, prompt arrays of strings and
// of token ids, GET /v1/models/{id}, logprob bytes, n > 1 streamed.
func TestOpenAIRequestForms(t *testing.T) {
	s, ts := testServer(t)
	s.APIKey = ""
	// No chat template: a clear refusal that says how to add one.
	code, out := call(t, ts, "POST", "/v1/chat/completions", `{"model":"stories","messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, 400, code)
	require.Contains(t, out["error"].(map[string]any)["message"], "--chat-template FILE")
	require.NoError(t, s.Gen.Tok.SetChatTemplate(testTemplate))

	chat := func(messages string) string {
		t.Helper()
		code, out := call(t, ts, "POST", "/v1/chat/completions", `{"model":"stories","max_tokens":8,"temperature":0,"messages":`+messages+`}`)
		require.Equal(t, 200, code, "%v", out)
		return choiceTexts(t, out, true)[0]
	}
	plain := chat(`[{"role":"system","content":"Be kind."},{"role":"user","content":"Tell a story.\nAbout a cat."}]`)
	require.Equal(t, plain, chat(`[{"role":"developer","content":"Be kind."},{"role":"user","content":[{"type":"text","text":"Tell a story."},{"type":"text","text":"About a cat."}]}]`))
	_, check, aerr := parseChat([]byte(`{"model":"m","messages":[{"role":"developer","content":"Be kind."},{"role":"user","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}]}]}`))
	require.Nil(t, aerr)
	p, aerr := check()
	require.Nil(t, aerr)
	require.Equal(t, []tokenizer.Message{{Role: "system", Content: "Be kind."}, {Role: "user", Content: "A\nB"}}, p.messages)

	// Prompt arrays: one choice per prompt (each with n), and token ids as the text's.
	one := func(prompt string) string {
		code, out := call(t, ts, "POST", "/v1/completions", `{"model":"stories","max_tokens":6,"temperature":0,"prompt":`+prompt+`}`)
		require.Equal(t, 200, code, "%v", out)
		require.Len(t, out["choices"], 1)
		return choiceTexts(t, out, false)[0]
	}
	a, b := one(`"Once upon a time"`), one(`"The dog"`)
	require.NotEqual(t, a, b)
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories","max_tokens":6,"temperature":0,"prompt":["Once upon a time","The dog"]}`)
	require.Equal(t, 200, code, "%v", out)
	require.Equal(t, []string{a, b}, choiceTexts(t, out, false))
	ids, err := s.Gen.PromptIDs(Request{Prompt: "Once upon a time"})
	require.NoError(t, err)
	idsJSON := strings.ReplaceAll(fmt.Sprint(ids), " ", ",")
	require.Equal(t, a, one(idsJSON))
	dogIDs, err := s.Gen.PromptIDs(Request{Prompt: "The dog"})
	require.NoError(t, err)
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories","max_tokens":6,"temperature":0,"prompt":[`+idsJSON+`,`+strings.ReplaceAll(fmt.Sprint(dogIDs), " ", ",")+`]}`)
	require.Equal(t, 200, code, "%v", out)
	require.Equal(t, []string{a, b}, choiceTexts(t, out, false))
	require.Equal(t, float64(len(ids)+len(dogIDs)), out["usage"].(map[string]any)["prompt_tokens"])

	// GET /v1/models/{id}.
	code, out = call(t, ts, "GET", "/v1/models/stories", "")
	require.Equal(t, 200, code)
	require.Equal(t, "stories", out["id"])
	require.Equal(t, "model", out["object"])
	code, _ = call(t, ts, "POST", "/v1/adapters", `{"name":"neg","path":"neg"}`)
	require.Equal(t, 200, code)
	code, out = call(t, ts, "GET", "/v1/models/stories:neg", "")
	require.Equal(t, 200, code)
	require.Equal(t, "stories:neg", out["id"])

	// Logprob bytes: the token's bytes as integers.
	code, out = call(t, ts, "POST", "/v1/chat/completions", `{"model":"stories","max_tokens":5,"temperature":0,"logprobs":true,"top_logprobs":2,"messages":[{"role":"user","content":"hi"}]}`)
	require.Equal(t, 200, code, "%v", out)
	content := out["choices"].([]any)[0].(map[string]any)["logprobs"].(map[string]any)["content"].([]any)
	require.Len(t, content, 5)
	for _, e := range content {
		e := e.(map[string]any)
		var raw []byte
		for _, v := range e["bytes"].([]any) {
			raw = append(raw, byte(v.(float64)))
		}
		require.Equal(t, e["token"], string(raw))
		require.Len(t, e["top_logprobs"], 2)
	}
	// A byte-fallback token is its byte, not the replacement character its text decodes to.
	id, ok := s.Gen.Tok.TokenToID("<0xE2>")
	require.True(t, ok)
	require.Equal(t, []int{0xE2}, s.tokenBytes(TokenLogprob{ID: int32(id), Token: "\uFFFD"}))

	// n > 1 streamed: each chunk names its choice; each choice's text is the plain request's.
	code, out = call(t, ts, "POST", "/v1/completions", `{"model":"stories","max_tokens":8,"temperature":1,"seed":3,"n":2,"prompt":"Once"}`)
	require.Equal(t, 200, code, "%v", out)
	want := choiceTexts(t, out, false)
	for _, chatMode := range []bool{false, true} {
		path, body := "/v1/completions", `{"model":"stories","max_tokens":8,"temperature":1,"seed":3,"n":2,"prompt":"Once","stream":true,"stream_options":{"include_usage":true}}`
		if chatMode {
			path, body = "/v1/chat/completions", `{"model":"stories","max_tokens":8,"temperature":1,"seed":3,"n":2,"messages":[{"role":"user","content":"Once"}],"stream":true}`
		}
		resp, err := post(context.Background(), t, ts.Client(), ts.URL+path, body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		events, done, err := readStream(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.True(t, done)
		texts, finished, roles := make([]string, 2), make([]int, 2), make([]int, 2)
		for _, ev := range events {
			for _, c := range ev["choices"].([]any) {
				c := c.(map[string]any)
				i := int(c["index"].(float64))
				if c["finish_reason"] != nil {
					finished[i]++
				}
				if chatMode {
					d := c["delta"].(map[string]any)
					if d["role"] != nil {
						roles[i]++
					}
					if s, ok := d["content"].(string); ok {
						texts[i] += s
					}
				} else {
					texts[i] += c["text"].(string)
				}
			}
		}
		require.Equal(t, []int{1, 1}, finished)
		if chatMode {
			require.Equal(t, []int{1, 1}, roles, "each choice's first chunk names the role")
		} else {
			require.Equal(t, want, texts)
			require.Equal(t, float64(16), events[len(events)-1]["usage"].(map[string]any)["completion_tokens"])
		}
	}
	// A streamed answer's last event can reach the client before its handler releases the slots.
	require.Eventually(t, func() bool { return s.InFlight() == 0 }, 5*time.Second, time.Millisecond, "%d slots taken", s.InFlight())
}
